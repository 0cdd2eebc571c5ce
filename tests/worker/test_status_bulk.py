"""``crmsync status`` shows each tenant's Bulk API budgets as last read from ``/limits``, and lists a tenant
whose budgets hash holds garbage like any other."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import redis

from quota import CreditBucket
from tests.conftest import FakeClock
from tests.metrics.budgets import Notices, limits, store_budgets
from tests.quota.test_cli import crmsync
from worker import keys
from worker.cli.status import print_status, tenant_rows
from worker.salesforce.bulk_budget import BulkBudgets

QUOTA_FIELDS = {"tenant", "limit", "limit_state", "used", "remaining", "percent_used", "resets_at", "reset_at",
                "config_error", "paused", "pause_reason", "paused_since", "parked_jobs", "org_api_usage",
                "org_api_max"}


def test_status_shows_the_budgets_last_read(redis_url: str, redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    for tenant in ("acme", "globex", "initech"):
        bucket.set_limit(tenant, 100_000, actor="test")
    store_budgets(redis_client, "acme", limits(batches=14_000, query_jobs=9_990), at=clock())
    store_budgets(redis_client, "initech", limits(query_storage_mb=0), at=clock())
    redis_client.hset(keys.bulk_budget("globex"), mapping={"query_jobs_remaining": "²", "query_jobs_max": "10000"})

    done = crmsync(redis_url, "status", "--json")

    assert done.returncode == 0, done.stderr
    rows = {row["tenant"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"acme", "globex", "initech"}
    assert all(set(row) >= QUOTA_FIELDS for row in rows.values())  # every field it had before
    assert rows["acme"]["bulk"] == {
        "batches": {"remaining": 14_000, "max": 15_000},
        "query_jobs": {"remaining": 9_990, "max": 10_000},
        "query_storage_mb": {"remaining": 1_000_000, "max": 1_048_576},
        "read_at": datetime.fromtimestamp(clock(), UTC).isoformat(),
    }
    assert rows["initech"]["bulk"]["query_storage_mb"] == {"remaining": 0, "max": 1_048_576}
    assert rows["globex"]["bulk"] is None  # a value written by hand is no reading
    assert "bulk_unreadable" not in rows["globex"]
    assert rows["globex"]["limit"] == 100_000  # the rest of the row is as ever

    human = crmsync(redis_url, "status")
    assert human.returncode == 0, human.stderr
    assert "Traceback" not in human.stderr
    lines = {line.split()[0]: line for line in human.stdout.splitlines()}
    assert lines["TENANT"].endswith("ORG USAGE              BULK Q-JOBS/BATCHES LEFT")
    assert lines["acme"].endswith("9,990/14,000")
    assert lines["initech"].endswith("9,990/14,000 (no query storage)")
    assert lines["globex"].endswith(" -")


@pytest.mark.parametrize(("fields", "bulk", "column"), [
    ({}, None, "-"),
    ({"batches_remaining": "9" * 5000, "batches_max": "15000"}, None, "-"),
    ({"batches_remaining": "lots", "batches_max": "15000", "query_jobs_remaining": "7", "query_jobs_max": "10000",
      "at": "inf"},
     {"query_jobs": {"remaining": 7, "max": 10_000}, "read_at": None}, "7/?"),
])
def test_hand_written_budgets_never_hide_the_tenant(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str],
                                                    fields: dict[str, str], bulk: dict[str, object] | None,
                                                    column: str) -> None:
    bucket = CreditBucket(redis_client)
    bucket.set_limit("acme", 100_000, actor="test")
    if fields:
        redis_client.hset(keys.bulk_budget("acme"), mapping=fields)

    [row] = tenant_rows(bucket)

    assert "unreadable" not in row
    assert row["bulk"] == bulk
    assert ("bulk_unreadable" in row) == (column == "UNREADABLE")
    print_status(bucket)
    assert capsys.readouterr().out.splitlines()[1].endswith(f"  {column}")


def test_a_budgets_key_of_the_wrong_type_and_one_marked_spent(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test")
    bucket.set_limit("globex", 100_000, actor="test")
    redis_client.rpush(keys.bulk_budget("acme"), "not a hash")
    # Salesforce refused a job before /limits was ever read: spent, with no read time.
    BulkBudgets(redis_client, "globex", Notices(), clock=clock).spent("batches", "LIMIT_EXCEEDED")

    rows = {row["tenant"]: row for row in tenant_rows(bucket)}

    assert rows["acme"]["bulk"] is None
    assert "WRONGTYPE" in rows["acme"]["bulk_unreadable"]
    assert rows["acme"]["remaining"] == 100_000
    assert rows["globex"]["bulk"] == {"batches": {"remaining": 0, "max": 0}, "read_at": None}
