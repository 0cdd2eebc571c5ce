"""A push's stored Bulk state is checked when it is read back: a job id not in Salesforce's shape is forgotten,
never put into a request path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from worker import keys
from worker.jobs.push import _Push, store_records
from worker.jobs.state import JobStore


@dataclass
class _Org:
    """What a push reads of its Salesforce client before sending anything: the tenant."""

    tenant: str = "acme"


def _push(client: redis.Redis, bulk: object) -> _Push:
    store_records(client, "acme", "job1", [{"Email__c": "a@example.com"}])
    client.hset(keys.push_records("acme", "job1"), "bulk", json.dumps(bulk))
    sf: Any = _Org()
    return _Push(sf, client=client, jobs=JobStore(client), job_id="job1", sobject="Lead", external_id="Email__c",
                 slice_over=lambda: False)


@pytest.mark.parametrize("bulk", [
    {"job_id": "../../sobjects/User", "stage": "open", "polls": 0, "requests": 1},
    {"job_id": "750x@evil.example", "stage": "uploading"},
    {"stage": "open"},
    "750R0000000AAAAAAA",
])
def test_a_bad_stored_bulk_job_is_forgotten(redis_client: redis.Redis, bulk: object) -> None:
    with capture_logs() as logs:
        push = _push(redis_client, bulk)
    assert push.bulk_state() is None
    assert redis_client.hget(keys.push_records("acme", "job1"), "bulk") is None
    assert [e["event"] for e in logs] == ["checkpoint_discarded"]
    assert logs[0]["part"] == "bulk"


def test_a_good_stored_bulk_job_is_kept(redis_client: redis.Redis) -> None:
    state = {"job_id": "750R0000000AAAAAAA", "stage": "open", "polls": 0, "requests": 1}
    assert _push(redis_client, state).bulk_state() == state
