"""Rolling windows, reserves, refunds and reset-time changes, case by case on a real Redis with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis

from quota import CreditBucket, InvalidReserve, InvalidWindow, keys
from tests.conftest import T0, FakeClock

DAY = 86_400
HOUR = 3_600
MIDNIGHT_AFTER_T0 = T0 + 12 * HOUR


@pytest.fixture
def bucket(redis_url: str, redis_client: redis.Redis, clock: FakeClock) -> CreditBucket:
    return CreditBucket.from_url(redis_url, clock=clock)


def test_rolling_credits_come_back_24_to_25_hours_after_they_were_taken(bucket: CreditBucket,
                                                                         clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops", window="rolling")
    clock.now = T0 + 30 * 60  # half past the hour
    assert bucket.take("acme", 60_000).granted
    clock.now = T0 + 5 * HOUR
    grant = bucket.take("acme", 40_000)
    assert grant.granted
    # The oldest credits come back when their whole hour is more than 24 hours old: 24.5 h after the take.
    assert grant.resets_at == datetime.fromtimestamp(T0 + 25 * HOUR, UTC)
    clock.now = MIDNIGHT_AFTER_T0  # crossing midnight changes nothing in rolling mode
    assert not bucket.take("acme", 1).granted
    clock.now = T0 + 25 * HOUR - 1
    assert bucket.status("acme").remaining == 0
    clock.now = T0 + 25 * HOUR
    status = bucket.status("acme")
    assert (status.used, status.remaining, status.window) == (40_000, 60_000, "rolling")
    assert status.resets_at == datetime.fromtimestamp(T0 + 30 * HOUR, UTC)
    assert bucket.take("acme", 60_000).granted
    assert not bucket.take("acme", 1).granted


def test_rolling_window_is_one_small_hash(bucket: CreditBucket, redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops", window="rolling")
    for hour in range(60):  # 2.5 days of hourly takes
        clock.now = T0 + hour * HOUR
        assert bucket.take("acme", 1).granted
    assert redis_client.hlen(keys.rolling_window("acme")) <= 26
    ttl = redis_client.ttl(keys.rolling_window("acme"))
    assert 0 < ttl <= 25 * HOUR + 3600  # gone once its newest credits are back (plus grace)


def test_reserve_is_kept_for_essential_takes(bucket: CreditBucket) -> None:
    bucket.set_limit("acme", 100_000, actor="ops", reserve=10_000)
    assert bucket.take("acme", 90_000).granted
    refused = bucket.take("acme", 1)
    assert (refused.granted, refused.remaining, refused.reserve, refused.reserve_only) == (False, 10_000, 10_000, True)
    status = bucket.status("acme")
    assert (status.remaining, status.available, status.reserve) == (10_000, 0, 10_000)
    assert bucket.take("acme", 10_000, essential=True).granted
    assert not bucket.take("acme", 1, essential=True).granted
    assert not bucket.take("acme", 1, essential=True).reserve_only


@pytest.mark.parametrize("reserve", [-1, 100_000, 150_000, "10k", 1.5, True, None])
def test_bad_reserve_is_refused_and_nothing_written(bucket: CreditBucket, redis_client: redis.Redis,
                                                    reserve: object) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    before = redis_client.hgetall(keys.config("acme")), redis_client.lrange(keys.audit("acme"), 0, -1)
    if reserve is None:  # a stored reserve the new limit would not be above
        bucket.set_limit("acme", 200_000, actor="ops", reserve=150_000)
        before = redis_client.hgetall(keys.config("acme")), redis_client.lrange(keys.audit("acme"), 0, -1)
        with pytest.raises(InvalidReserve, match="not below the new limit"):
            bucket.set_limit("acme", 100_000, actor="ops")
    else:
        with pytest.raises(InvalidReserve, match="reserve"):
            bucket.set_limit("acme", 100_000, actor="ops", reserve=reserve)
    assert (redis_client.hgetall(keys.config("acme")), redis_client.lrange(keys.audit("acme"), 0, -1)) == before


@pytest.mark.parametrize("window", ["weekly", "Rolling", "", 1])
def test_bad_window_is_refused_and_nothing_written(bucket: CreditBucket, redis_client: redis.Redis,
                                                   window: object) -> None:
    with pytest.raises(InvalidWindow, match=r"daily .* or rolling"):
        bucket.set_limit("acme", 100_000, actor="ops", window=window)  # type: ignore[arg-type]
    assert redis_client.dbsize() == 0


def test_switching_modes_carries_the_credits_used(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    assert bucket.take("acme", 70_000).granted
    status = bucket.set_limit("acme", 100_000, actor="ops", window="rolling")
    assert (status.used, status.window) == (70_000, "rolling")
    clock.now = MIDNIGHT_AFTER_T0  # the daily reset no longer applies: the credits count as taken at the switch
    assert bucket.status("acme").used == 70_000
    status = bucket.set_limit("acme", 100_000, actor="ops", window="daily")
    assert (status.used, status.window) == (70_000, "daily")
    assert not bucket.take("acme", 30_001).granted
    clock.now = MIDNIGHT_AFTER_T0 + DAY  # back in daily mode: they come back at the reset
    assert bucket.status("acme").used == 0
    assert [e.field for e in bucket.history("acme")][:2] == ["window", "window"]


def test_moving_the_reset_time_cannot_stretch_a_day_into_three_limits(bucket: CreditBucket, clock: FakeClock) -> None:
    # The reproduction from the issue: reset 00:00 moved to 00:01 at 23:58 let 300,000 through in 12 minutes.
    bucket.set_limit("acme", 100_000, actor="ops")
    clock.now = MIDNIGHT_AFTER_T0 - 120
    granted = int(bucket.take("acme", 100_000).granted)
    bucket.set_limit("acme", 100_000, actor="ops", reset_at="00:01")
    for minute in range(12):
        clock.now = MIDNIGHT_AFTER_T0 - 120 + minute * 60
        grant = bucket.take("acme", 100_000)
        granted += grant.granted
    assert granted == 2  # one window before midnight, one after: twice the limit at most, never three times
    assert grant.resets_at == datetime.fromtimestamp(MIDNIGHT_AFTER_T0 + DAY + 60, UTC)


def test_refund_returns_at_most_what_the_grant_took(bucket: CreditBucket) -> None:
    bucket.set_limit("acme", 100_000, actor="ops")
    assert bucket.take("acme", 5).granted
    grant = bucket.take("acme", 1)
    assert bucket.refund("acme", 10**6, grant=grant) == 1
    refused = bucket.take("acme", 10**6)
    assert bucket.refund("acme", 3, grant=refused) == 0
    assert bucket.status("acme").used == 5


def test_rolling_refund_goes_back_into_its_hour_only_while_it_counts(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("acme", 100_000, actor="ops", window="rolling")
    grant = bucket.take("acme", 10)
    clock.now = T0 + 3 * HOUR
    assert bucket.refund("acme", 4, grant=grant) == 4
    assert bucket.status("acme").used == 6
    clock.now = T0 + 25 * HOUR
    assert bucket.refund("acme", 6, grant=grant) == 0


def test_the_largest_limit_and_reserve_are_exact(bucket: CreditBucket) -> None:
    status = bucket.set_limit("acme", 10**15, actor="ops", reserve=10**15 - 1, window="rolling")
    assert (status.limit_state, status.limit, status.reserve, status.available) == ("ok", 10**15, 10**15 - 1, 1)
    assert bucket.take("acme", 1).granted
    assert not bucket.take("acme", 1).granted
    assert bucket.take("acme", 10**15 - 1, essential=True).remaining == 0
