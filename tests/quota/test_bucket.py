"""The credit bucket's rules, on a real Redis server, with explicit times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from quota import (
    CreditBucket,
    InvalidInput,
    InvalidLimit,
    InvalidResetTime,
    InvalidTenant,
    QuotaUnavailable,
    keys,
)
from quota.connection import connect
from tests.conftest import T0, FakeClock

DAY = 86_400
MIDNIGHT_AFTER_T0 = T0 + 12 * 3600


@pytest.fixture
def bucket(redis_url: str, redis_client: redis.Redis, clock: FakeClock) -> CreditBucket:
    return CreditBucket.from_url(redis_url, clock=clock)


def test_tenant_without_limit_gets_no_credit(bucket: CreditBucket, redis_client: redis.Redis) -> None:
    grant = bucket.take("acme", 1)
    assert (grant.granted, grant.remaining, grant.limit) == (False, 0, 0)
    status = bucket.status("acme")
    assert status.limit_state == "unset"
    assert status.limit is None
    assert redis_client.dbsize() == 0


def test_take_is_all_or_nothing(bucket: CreditBucket) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    first = bucket.take("acme", 99_999)
    assert (first.granted, first.remaining, first.limit) == (True, 1, 100_000)
    refused = bucket.take("acme", 2)
    assert (refused.granted, refused.remaining) == (False, 1)
    assert bucket.status("acme").used == 99_999
    last = bucket.take("acme", 1)
    assert (last.granted, last.remaining) == (True, 0)
    assert not bucket.take("acme", 1).granted


def test_bucket_refills_at_midnight_utc(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    grant = bucket.take("acme", 100_000)
    assert grant.resets_at == datetime.fromtimestamp(MIDNIGHT_AFTER_T0, UTC)
    clock.now = MIDNIGHT_AFTER_T0 - 1
    assert not bucket.take("acme", 1).granted
    clock.now = MIDNIGHT_AFTER_T0
    after = bucket.take("acme", 1)
    assert (after.granted, after.remaining) == (True, 99_999)
    assert after.resets_at == datetime.fromtimestamp(MIDNIGHT_AFTER_T0 + DAY, UTC)


def test_reset_time_of_day_is_per_tenant(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops", reset_at="18:30")
    bucket.set_limit("globex", 100_000, actor="ops")
    expected = T0 + 6 * 3600 + 30 * 60  # T0 is 12:00 UTC
    assert bucket.take("acme", 100_000).resets_at == datetime.fromtimestamp(expected, UTC)
    assert bucket.take("globex", 100_000).resets_at == datetime.fromtimestamp(MIDNIGHT_AFTER_T0, UTC)
    clock.now = expected
    assert bucket.take("acme", 1).granted
    assert not bucket.take("globex", 1).granted


def test_changed_reset_time_applies_after_the_open_window(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    bucket.take("acme", 100_000)
    status = bucket.set_limit("acme", 100_000, actor="ops", reset_at="13:00")
    # Moving the reset to one hour from now must not refill the bucket early.
    assert status.remaining == 0
    assert status.resets_at == datetime.fromtimestamp(MIDNIGHT_AFTER_T0, UTC)
    clock.now = T0 + 3600
    assert not bucket.take("acme", 1).granted
    clock.now = MIDNIGHT_AFTER_T0
    grant = bucket.take("acme", 1)
    assert grant.granted
    # The first window under the new time lasts at least 24 hours (here 37): a 13-hour window would let the
    # credits of three windows through within 24 hours.
    first_end = MIDNIGHT_AFTER_T0 + DAY + 13 * 3600
    assert grant.resets_at == datetime.fromtimestamp(first_end, UTC)
    clock.now = MIDNIGHT_AFTER_T0 + 13 * 3600
    assert bucket.take("acme", 99_999).granted
    assert not bucket.take("acme", 1).granted
    clock.now = first_end
    grant = bucket.take("acme", 1)
    assert grant.remaining == 99_999
    assert grant.resets_at == datetime.fromtimestamp(first_end + DAY, UTC)


def test_raising_the_limit_adds_exactly_the_difference(bucket: CreditBucket) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    bucket.take("acme", 100_000)
    status = bucket.set_limit("acme", 150_000, actor="ops")
    assert (status.used, status.remaining) == (100_000, 50_000)
    assert bucket.take("acme", 50_000).granted
    assert not bucket.take("acme", 1).granted


def test_lowering_below_used_leaves_nothing_until_reset(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 200_000, actor="ops")
    bucket.take("acme", 150_000)
    status = bucket.set_limit("acme", 100_000, actor="ops")
    assert (status.used, status.remaining) == (150_000, 0)
    assert not bucket.take("acme", 1).granted
    clock.now = MIDNIGHT_AFTER_T0
    assert bucket.take("acme", 1).remaining == 99_999


def test_refund_never_exceeds_the_limit(bucket: CreditBucket) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    grant = bucket.take("acme", 3)
    assert bucket.refund("acme", 2, grant=grant) == 2
    assert bucket.status("acme").remaining == 99_999
    assert bucket.refund("acme", 5) == 1
    assert bucket.status("acme").remaining == 100_000
    assert bucket.refund("acme", 1) == 0


def test_refund_never_reaches_an_ended_window(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    old = bucket.take("acme", 10)
    clock.now = MIDNIGHT_AFTER_T0
    bucket.take("acme", 4)
    assert bucket.refund("acme", 10, grant=old) == 0
    assert bucket.status("acme").used == 4


def test_limit_change_reaches_another_process_bucket_on_next_take(
    redis_url: str, redis_client: redis.Redis, clock: FakeClock
) -> None:
    admin = CreditBucket.from_url(redis_url, clock=clock)
    worker = CreditBucket.from_url(redis_url, clock=clock)
    admin.set_limit("acme", 100_000, actor="ops")
    assert worker.take("acme", 100_000).granted
    admin.set_limit("acme", 100_001, actor="ops")
    assert worker.take("acme", 1).granted


def test_window_time_comes_from_the_redis_server(redis_url: str, redis_client: redis.Redis) -> None:
    bucket = CreditBucket.from_url(redis_url)  # no clock: the server's TIME decides the window
    bucket.set_limit("acme", 100_000, actor="ops")
    server_now = int(redis_client.time()[0])
    grant = bucket.take("acme", 1)
    assert grant.granted
    assert grant.window_end == (server_now // DAY + 1) * DAY or grant.window_end == (server_now // DAY + 2) * DAY


@pytest.mark.parametrize("limit", [99_999, 0, -1, 1.5, 100_000.0, "abc", "1e5", "100000.0", "", " 100000",
                                   True, None, 10**16, [100_000]])
def test_invalid_limits_are_refused_and_nothing_is_written(
    bucket: CreditBucket, redis_client: redis.Redis, limit: object
) -> None:
    with pytest.raises(InvalidLimit, match="100,000"):
        bucket.set_limit("acme", limit, actor="ops")
    assert redis_client.dbsize() == 0


def test_invalid_limit_leaves_previous_config_untouched(bucket: CreditBucket, redis_client: redis.Redis) -> None:
    bucket.set_limit("acme", 120_000, actor="ops")
    before = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    with pytest.raises(InvalidLimit):
        bucket.set_limit("acme", 5, actor="mallory")
    with pytest.raises(InvalidResetTime):
        bucket.set_limit("acme", 130_000, actor="mallory", reset_at="24:00")
    assert {k: redis_client.dump(k) for k in redis_client.keys("*")} == before


@pytest.mark.parametrize("tenant", ["", "ACME", "a{b}", "a:b", "-acme", "a" * 65, "acme corp", None, 7])
def test_invalid_tenant_ids_are_refused(bucket: CreditBucket, redis_client: redis.Redis, tenant: object) -> None:
    for call in (lambda: bucket.take(tenant, 1), lambda: bucket.status(tenant),  # type: ignore[arg-type]
                 lambda: bucket.set_limit(tenant, 100_000, actor="ops")):  # type: ignore[arg-type]
        with pytest.raises(InvalidTenant, match="a-z, 0-9"):
            call()
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("n", [0, -1, 1.0, True, "1"])
def test_credit_counts_must_be_positive_whole_numbers(bucket: CreditBucket, n: object) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    with pytest.raises(InvalidInput):
        bucket.take("acme", n)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        bucket.refund("acme", n)  # type: ignore[arg-type]
    assert bucket.status("acme").used == 0


@pytest.mark.parametrize(("field", "garbage"), [("limit", "abc"), ("limit", "99999"), ("limit", "-100000"),
                                                 ("limit", "1e6"), ("reset_at", "25:00"), ("reset_at", "x"),
                                                 ("reset_from", "soon")])
def test_hand_written_garbage_grants_nothing(
    bucket: CreditBucket, redis_client: redis.Redis, field: str, garbage: str
) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    redis_client.hset(keys.config("acme"), field, garbage)
    assert not bucket.take("acme", 1).granted
    status = bucket.status("acme")
    assert (status.limit_state, status.limit, status.remaining) == ("invalid", None, 0)
    assert status.config_error


def test_wrong_key_type_fails_closed(bucket: CreditBucket, redis_client: redis.Redis) -> None:
    redis_client.set(keys.config("acme"), "150000")
    with pytest.raises(QuotaUnavailable):
        bucket.take("acme", 1)


def test_unreachable_redis_grants_nothing() -> None:
    bucket = CreditBucket.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    with pytest.raises(QuotaUnavailable):
        bucket.take("acme", 1)


def test_every_tenant_key_is_hash_tagged_and_window_state_expires(
    bucket: CreditBucket, redis_client: redis.Redis, clock: FakeClock
) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    grant = bucket.take("acme", 1)
    tenant_keys = [k for k in redis_client.scan_iter() if k != keys.TENANTS]  # every node of a cluster
    assert tenant_keys
    assert all("{acme}" in k for k in tenant_keys)
    window = keys.window_prefix("acme") + str(grant.window_end)
    ttl = redis_client.ttl(window)
    assert 0 < ttl <= grant.window_end - clock.now + 3600
    assert all(redis_client.ttl(k) == -1 for k in tenant_keys if k != window)  # config and audit persist


def test_audit_trail_records_who_when_old_and_new(redis_url: str, redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(connect(redis_url), clock=clock, max_audit=3)
    bucket.set_limit("acme", 100_000, actor="alice")
    clock.advance(60)
    bucket.set_limit("acme", 150_000, actor="bob", reset_at="06:00")
    bucket.set_limit("acme", 150_000, actor="carol")  # no change: no entry
    history = bucket.history("acme")
    assert [(e.actor, e.field, e.old, e.new) for e in history] == [
        ("bob", "reset_at", None, "06:00"),
        ("bob", "limit", "100000", "150000"),
        ("alice", "limit", None, "100000"),
    ]
    assert history[0].at == datetime.fromtimestamp(T0 + 60, UTC)
    bucket.set_limit("acme", 160_000, actor="dave")
    assert len(bucket.history("acme")) == 3  # bounded


def test_tenants_lists_configured_tenants(bucket: CreditBucket, redis_client: redis.Redis) -> None:
    bucket.set_limit("globex", 100_000, actor="ops")
    bucket.set_limit("acme", 100_000, actor="ops")
    redis_client.sadd(keys.TENANTS, "Not{Valid}")
    assert bucket.tenants() == ["acme", "globex"]


def test_every_lua_script_starts_with_keys_and_argv_header() -> None:
    scripts = sorted((Path(__file__).parents[2] / "quota" / "scripts").glob("*.lua"))
    assert scripts
    for script in scripts:
        header = []
        for line in script.read_text().splitlines():
            if not line.startswith("--"):
                break
            header.append(line)
        text = "\n".join(header)
        assert "-- KEYS:" in text, script.name
        assert "-- ARGV:" in text, script.name
