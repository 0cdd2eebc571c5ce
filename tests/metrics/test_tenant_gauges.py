"""Per-tenant gauges, scraped over HTTP, against what Redis holds."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from quota import CreditBucket
from tests.conftest import FakeClock
from tests.metrics.budgets import Notices, limits, store_budgets
from tests.metrics.conftest import Serve, http_scrape, samples, value
from worker import keys
from worker.jobs.parking import ParkedJob, PauseStore
from worker.metrics.collector import BULK_BUDGETS, TenantCollector
from worker.metrics.server import build_registry
from worker.salesforce.bulk_budget import BulkBudgets


def _park(store: PauseStore, tenant: str, n: int, reason: Any = "quota_exhausted") -> None:
    for seq in range(1, n + 1):
        job = ParkedJob("crmsync_pull", {"tenant": tenant, "sobject": "Lead", "job_id": f"j{seq}", "seq": seq})
        store.park(tenant, job, reason, "credits used up")


def test_values_match_redis_state(redis_client: redis.Redis, clock: FakeClock, serve_registry: Serve) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 150_000, actor="test", reset_at="06:30")
    bucket.take("acme", 1_234)
    bucket.set_limit("globex", 100_000, actor="test")
    bucket.take("globex", 100_000)
    store = PauseStore(redis_client, clock=clock)
    _park(store, "globex", 3)
    redis_client.hset(keys.org_usage("acme"), mapping={"used": 4_500, "max": 15_000, "at": clock()})

    text = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    acme, globex = bucket.status("acme"), bucket.status("globex")
    assert value(text, "crmsync_quota_limit", tenant="acme") == 150_000
    assert value(text, "crmsync_quota_used", tenant="acme") == acme.used == 1_234
    assert value(text, "crmsync_quota_remaining", tenant="acme") == acme.remaining == 148_766
    assert value(text, "crmsync_quota_reset_timestamp_seconds", tenant="acme") == acme.resets_at.timestamp()
    assert value(text, "crmsync_quota_reset_timestamp_seconds", tenant="globex") == globex.resets_at.timestamp()
    assert acme.resets_at != globex.resets_at  # 06:30 vs midnight: the scrape tells them apart
    assert value(text, "crmsync_quota_remaining", tenant="globex") == 0
    assert value(text, "crmsync_quota_used", tenant="globex") == 100_000

    assert samples(text, "crmsync_tenant_paused") == [
        ({"tenant": "acme", "reason": ""}, 0.0),
        ({"tenant": "globex", "reason": "quota_exhausted"}, 1.0),
    ]
    assert value(text, "crmsync_parked_jobs", tenant="globex") == store.parked_count("globex") == 3
    assert value(text, "crmsync_parked_jobs", tenant="acme") == 0
    assert value(text, "crmsync_org_api_usage", tenant="acme") == 4_500
    assert value(text, "crmsync_org_api_max", tenant="acme") == 15_000
    assert value(text, "crmsync_org_api_usage", tenant="globex") is None  # Salesforce has not reported yet
    assert value(text, "crmsync_tenants") == 2
    assert value(text, "crmsync_tenant_scrape_success") == 1
    assert value(text, "crmsync_tenant_scrape_errors") == 0


def test_window_mode_reserve_and_when_rolling_credits_come_back(redis_client: redis.Redis, clock: FakeClock,
                                                                serve_registry: Serve) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test", reserve=2_500)
    bucket.set_limit("globex", 100_000, actor="test", window="rolling", reserve=1_000)
    bucket.take("globex", 400)
    clock.advance(3 * 3600)
    bucket.take("globex", 600)
    store = PauseStore(redis_client, clock=clock)
    _park(store, "globex", 2)
    store.park("globex", ParkedJob("crmsync_push", {"tenant": "globex", "sobject": "Lead", "job_id": "e1", "seq": 9,
                                                    "priority": "essential"}), "quota_exhausted", "no credits left")

    text = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    assert value(text, "crmsync_quota_reserve", tenant="acme") == 2_500
    assert value(text, "crmsync_quota_reserve", tenant="globex") == 1_000
    assert samples(text, "crmsync_quota_window_info") == [
        ({"tenant": "acme", "window": "daily"}, 1.0),
        ({"tenant": "globex", "window": "rolling"}, 1.0),
    ]
    # Rolling: when the oldest credits of the last 24 hours come back, as the bucket itself says.
    assert value(text, "crmsync_quota_reset_timestamp_seconds", tenant="globex") == (
        bucket.status("globex").resets_at.timestamp())
    assert value(text, "crmsync_quota_remaining", tenant="globex") == 99_000
    assert value(text, "crmsync_parked_jobs", tenant="globex") == 3  # essential ones included


def test_scrape_follows_changes_in_redis(redis_client: redis.Redis, clock: FakeClock, serve_registry: Serve) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test")
    store = PauseStore(redis_client, clock=clock)
    _park(store, "acme", 2, reason="org_limit")
    server = serve_registry(build_registry(redis_client, None, clock=clock))
    assert value(http_scrape(server), "crmsync_tenant_paused", tenant="acme", reason="org_limit") == 1

    bucket.set_limit("acme", 200_000, actor="test")
    bucket.take("acme", 10)
    store.unpause("acme")
    redis_client.delete(keys.parked("acme"))
    text = http_scrape(server)
    assert value(text, "crmsync_quota_limit", tenant="acme") == 200_000
    assert value(text, "crmsync_quota_remaining", tenant="acme") == 199_990
    assert samples(text, "crmsync_tenant_paused") == [({"tenant": "acme", "reason": ""}, 0.0)]
    assert value(text, "crmsync_parked_jobs", tenant="acme") == 0


def test_unset_and_invalid_limits_have_no_limit_or_reset(redis_client: redis.Redis, clock: FakeClock,
                                                         serve_registry: Serve) -> None:
    redis_client.sadd(keys.TENANTS, "fresh", "broken")
    redis_client.hset(keys.config("broken"), "limit", "12x")
    PauseStore(redis_client, clock=clock).pause("noconfig", "auth_failed", "token refused")

    text = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    for tenant in ("fresh", "broken", "noconfig"):
        assert value(text, "crmsync_quota_limit", tenant=tenant) is None
        assert value(text, "crmsync_quota_reset_timestamp_seconds", tenant=tenant) is None
        assert value(text, "crmsync_quota_reserve", tenant=tenant) is None
        assert value(text, "crmsync_quota_window_info", tenant=tenant, window="daily") is None
        assert value(text, "crmsync_quota_remaining", tenant=tenant) == 0
        assert value(text, "crmsync_quota_used", tenant=tenant) == 0
    # A paused tenant with no quota config is still reported (it is in the paused index).
    assert value(text, "crmsync_tenant_paused", tenant="noconfig", reason="auth_failed") == 1
    assert value(text, "crmsync_tenants") == 3


def test_garbage_in_redis_never_breaks_a_scrape(redis_client: redis.Redis, redis_url: str, clock: FakeClock,
                                                serve_registry: Serve) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("good", 100_000, actor="test")
    bucket.take("good", 7)
    redis_client.sadd(keys.TENANTS, "Not A Tenant", "x" * 200, "wrongtypes", "oddvalues", "../evil")
    raw = redis.Redis.from_url(redis_url)
    raw.sadd(keys.TENANTS, b"\xff\xfe")  # not UTF-8
    raw.execute_command("HSET", keys.pause("oddvalues"), "detail", b"\xc3\x28")
    raw.close()
    redis_client.set(keys.config("wrongtypes"), "not a hash")  # the metering script fails on it
    redis_client.rpush(keys.pause("wrongtypes"), "not a hash")
    redis_client.set(keys.parked("wrongtypes"), "not a zset")
    redis_client.set(keys.parked_essential("oddvalues"), "not a zset")
    redis_client.set(keys.org_usage("wrongtypes"), "not a hash")
    redis_client.hset(keys.config("oddvalues"), mapping={"limit": "100000", "reset_at": "25:99"})
    redis_client.hset(keys.pause("oddvalues"), mapping={"reason": "made up by hand", "since": "yesterday"})
    redis_client.hset(keys.org_usage("oddvalues"), mapping={"used": "²", "max": "9" * 5000})
    # Hand-written pauses and parked sets, in the paused index as every pause and park puts its tenant.
    redis_client.sadd(keys.PAUSED, "wrongtypes", "oddvalues")

    text = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    assert value(text, "crmsync_tenant_scrape_success") == 1
    assert value(text, "crmsync_quota_used", tenant="good") == 7
    tenants = {labels["tenant"] for labels, _ in samples(text, "crmsync_tenant_paused")}
    assert tenants == {"good", "oddvalues"}  # invalid ids are skipped; wrongtypes has no readable pause
    assert value(text, "crmsync_tenant_paused", tenant="oddvalues", reason="other") == 1
    assert value(text, "crmsync_quota_limit", tenant="oddvalues") is None  # invalid reset time: config invalid
    assert value(text, "crmsync_org_api_usage", tenant="oddvalues") is None
    assert value(text, "crmsync_parked_jobs", tenant="oddvalues") is None
    assert value(text, "crmsync_quota_used", tenant="wrongtypes") is None
    assert value(text, "crmsync_tenant_scrape_errors") == 2  # wrongtypes (every read), oddvalues (org usage, parked)
    assert value(text, "crmsync_tenants") == 3


def test_bulk_budgets_as_last_read(redis_client: redis.Redis, clock: FakeClock, serve_registry: Serve) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    for tenant in ("acme", "globex", "initech"):
        bucket.set_limit(tenant, 100_000, actor="test")
    read_at = clock() - 600.5
    notices = store_budgets(redis_client, "acme", limits(query_storage_mb=0), at=read_at)
    assert [kind for kind, _, _ in notices.raised] == ["bulk_budget_exhausted"]
    # Salesforce refused a job before /limits was ever read: the budget is marked spent, with no read time.
    BulkBudgets(redis_client, "initech", Notices(), clock=clock).spent("query_jobs", "LIMIT_EXCEEDED")

    text = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    assert samples(text, "crmsync_bulk_budget_remaining") == [
        ({"tenant": "acme", "budget": "batches"}, 14_000.0),
        ({"tenant": "acme", "budget": "query_jobs"}, 9_990.0),
        ({"tenant": "acme", "budget": "query_storage_mb"}, 0.0),
        ({"tenant": "initech", "budget": "query_jobs"}, 0.0),
    ]
    assert value(text, "crmsync_bulk_budget_max", tenant="acme", budget="batches") == 15_000
    assert value(text, "crmsync_bulk_budget_max", tenant="acme", budget="query_storage_mb") == 1_048_576
    assert value(text, "crmsync_bulk_budget_read_timestamp_seconds", tenant="acme") == read_at
    assert value(text, "crmsync_bulk_budget_read_timestamp_seconds", tenant="initech") is None
    assert not [labels for labels, _ in samples(text, "crmsync_bulk_budget_max") if labels["tenant"] == "globex"]
    assert value(text, "crmsync_tenant_scrape_errors") == 0


def test_garbage_bulk_budgets_drop_only_their_series(redis_client: redis.Redis, redis_url: str, clock: FakeClock,
                                                     serve_registry: Serve) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    for tenant in ("good", "odd", "wrongtype", "undecodable"):
        bucket.set_limit(tenant, 100_000, actor="test")
    store_budgets(redis_client, "good", limits(), at=clock())
    redis_client.hset(keys.bulk_budget("odd"), mapping={
        "batches_remaining": "lots", "batches_max": "15000", "query_jobs_remaining": "²",
        "query_jobs_max": "9" * 5000, "query_storage_mb_remaining": "-1", "query_storage_mb_max": " 1048576 ",
        "at": "nan"})
    redis_client.set(keys.bulk_budget("wrongtype"), "not a hash")
    raw = redis.Redis.from_url(redis_url)
    raw.execute_command("HSET", keys.bulk_budget("undecodable"), "batches_remaining", b"\xc3\x28",
                        "batches_max", "15000", "at", "inf")
    raw.close()

    text = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    assert value(text, "crmsync_tenant_scrape_success") == 1
    assert value(text, "crmsync_quota_used", tenant="odd") == 0  # the tenant's other series are all there
    remaining = {(labels["tenant"], labels["budget"]) for labels, _ in samples(text, "crmsync_bulk_budget_remaining")}
    assert remaining == {("good", budget) for budget in BULK_BUDGETS}
    maxima = {(labels["tenant"], labels["budget"]) for labels, _ in samples(text, "crmsync_bulk_budget_max")}
    assert maxima - {("good", budget) for budget in BULK_BUDGETS} == {
        ("odd", "batches"), ("odd", "query_storage_mb"), ("undecodable", "batches")}
    timestamps = {labels["tenant"] for labels, _ in samples(text, "crmsync_bulk_budget_read_timestamp_seconds")}
    assert timestamps == {"good"}
    assert value(text, "crmsync_tenant_scrape_errors") == 3  # odd, wrongtype, undecodable


def test_wrong_type_registry_and_unreachable_redis(redis_client: redis.Redis, serve_registry: Serve) -> None:
    redis_client.set(keys.TENANTS, "not a set")
    text = http_scrape(serve_registry(build_registry(redis_client, None)))
    assert value(text, "crmsync_tenants") == 0
    assert value(text, "crmsync_tenant_scrape_success") == 1

    # No retries, as `crmsync metrics` has none.
    closed = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    text = http_scrape(serve_registry(build_registry(closed, None)))
    assert value(text, "crmsync_tenant_scrape_success") == 0
    assert samples(text, "crmsync_quota_used") == []


class _CountingConnection(redis.Connection):
    """Counts the writes a client makes to Redis: one per command, or one per pipeline."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


@pytest.mark.parametrize("tenants", [10_000])
def test_ten_thousand_tenants_in_a_few_round_trips(redis_client: redis.Redis, redis_url: str, clock: FakeClock,
                                                   tenants: int) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(tenants):
        tenant = f"t{i:05d}"
        pipe.sadd(keys.TENANTS, tenant)
        pipe.hset(keys.config(tenant), "limit", str(100_000 + i))
    pipe.execute()
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=_CountingConnection)
    client = redis.Redis(connection_pool=pool)
    collector = TenantCollector(client, clock=clock, chunk=500)
    opened = [pool.get_connection() for _ in range(2)]  # two round trips are in flight at a time
    for connection in opened:  # their handshakes are not the scrape's
        pool.release(connection)
    _CountingConnection.sends = 0

    scraped = collector.scrape()

    assert _CountingConnection.sends == 2 + tenants // 500  # registry, script load, one per chunk
    limits = dict(_samples(scraped.lines["crmsync_quota_limit"]))
    assert len(limits) == tenants
    assert limits['{tenant="t09999"}'] == 109_999
    assert len(scraped.lines["crmsync_tenant_paused"]) == tenants
    assert (scraped.tenants, scraped.errors, scraped.success) == (tenants, 0, 1)
    client.close()


def _samples(lines: list[str]) -> list[tuple[str, float]]:
    """``name{labels} value`` lines as (labels, value)."""
    out = []
    for line in lines:
        head, value = line.rsplit(" ", 1)
        out.append((head[head.index("{"):], float(value)))
    return out
