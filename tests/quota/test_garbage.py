"""Whatever is written into Redis by hand, the bucket grants nothing past the limit and says why.

The worker's Redis user may write window counters, and anyone with admin access may write config: each
value here is garbage the metering script must refuse, leaving the tenant ``invalid`` (no credit), with
``status``, ``quota show`` and ``quota set`` giving the reason and an exit code instead of a traceback, and
every other tenant still served and listed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from quota import CreditBucket, keys
from tests.quota.test_cli import crmsync

DAY = 86_400
Garbage = Callable[[redis.Redis, CreditBucket], object]


def _window_key(bucket: CreditBucket) -> str:
    return f"{keys.window_prefix('acme')}{bucket.take('globex', 1).window_end}"


def _hour(r: redis.Redis) -> int:
    return int(r.time()[0]) // 3600


GARBAGE: dict[str, Garbage] = {
    "negative counter": lambda r, b: r.set(_window_key(b), -999_950_000),
    "text counter": lambda r, b: r.set(_window_key(b), "lots"),
    "hash counter": lambda r, b: (r.delete(_window_key(b)), r.hset(_window_key(b), "x", "1")),
    "negative rolling hour": lambda r, b: (r.hset(keys.config("acme"), "window", "rolling"),
                                           r.hset(keys.rolling_window("acme"), str(_hour(r)), "-5")),
    "rolling hour far ahead": lambda r, b: (r.hset(keys.config("acme"), "window", "rolling"),
                                            r.hset(keys.rolling_window("acme"), str(_hour(r) + 500), "1")),
    "limit": lambda r, b: r.hset(keys.config("acme"), "limit", "1e6"),
    "reset time": lambda r, b: r.hset(keys.config("acme"), "reset_at", "25:00"),
    "reset_from of 17 digits": lambda r, b: r.hset(keys.config("acme"), "reset_from", "1" * 17),
    "reset_from two days ahead": lambda r, b: r.hset(keys.config("acme"), "reset_from",
                                                     str(int(r.time()[0]) + 2 * DAY)),
    "reset_from not a number": lambda r, b: r.hset(keys.config("acme"), "reset_from", "soon"),
    "reserve": lambda r, b: r.hset(keys.config("acme"), "reserve", "-1"),
    "reserve above the limit": lambda r, b: r.hset(keys.config("acme"), "reserve", "100000"),
    "window": lambda r, b: r.hset(keys.config("acme"), "window", "weekly"),
}


@pytest.fixture
def bucket(redis_url: str, redis_client: redis.Redis) -> CreditBucket:
    # On the server's clock, like the commands these tests run (they cannot be handed a test clock).
    made = CreditBucket.from_url(redis_url)
    for tenant in ("acme", "globex"):
        made.set_limit(tenant, 100_000, actor="ops")
    made.take("acme", 50)
    return made


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_makes_the_tenant_invalid_and_grants_nothing(garbage: Garbage, bucket: CreditBucket,
                                                             redis_client: redis.Redis) -> None:
    garbage(redis_client, bucket)
    before = {k: redis_client.dump(k) for k in redis_client.keys("crmsync:{acme}:*")}
    for essential in (False, True):
        grant = bucket.take("acme", 1, essential=essential)
        assert (grant.granted, grant.remaining) == (False, 0)
    assert bucket.refund("acme", 10) == 0
    assert {k: redis_client.dump(k) for k in redis_client.keys("crmsync:{acme}:*")} == before
    status = bucket.status("acme")
    assert (status.limit_state, status.limit, status.remaining) == ("invalid", None, 0)
    assert status.config_error
    assert bucket.take("globex", 1).granted  # the others go on


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_commands_say_why_without_a_traceback(garbage: Garbage, bucket: CreditBucket, redis_client: redis.Redis,
                                              redis_url: str) -> None:
    garbage(redis_client, bucket)
    reason = bucket.status("acme").config_error
    assert reason is not None
    shown = crmsync(redis_url, "quota", "show", "acme")
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr + shown.stdout
    assert reason in shown.stderr
    rows = json.loads(crmsync(redis_url, "status", "--json").stdout)
    assert {r["tenant"]: r["limit_state"] for r in rows} == {"acme": "invalid", "globex": "ok"}
    assert "Traceback" not in crmsync(redis_url, "status").stderr


def test_a_bad_reset_from_is_fixed_by_setting_the_reset_time_again(bucket: CreditBucket, redis_client: redis.Redis,
                                                                   redis_url: str) -> None:
    # The 17-digit reset_from used to make every take leave a counter with no expiry, and this fix crash.
    GARBAGE["reset_from of 17 digits"](redis_client, bucket)
    fixed = crmsync(redis_url, "quota", "set", "acme", "100000", "--reset-at", "06:00")
    assert fixed.returncode == 0, fixed.stderr
    assert bucket.status("acme").limit_state == "ok"
    assert bucket.take("acme", 1).granted
    assert all(redis_client.ttl(k) > 0 for k in redis_client.keys(f"{keys.window_prefix('acme')}*"))


@pytest.mark.parametrize("field", ["reset_at", "window", "reserve"])
def test_quota_set_refuses_to_keep_stored_garbage(field: str, bucket: CreditBucket, redis_client: redis.Redis,
                                                  redis_url: str) -> None:
    redis_client.hset(keys.config("acme"), field, "garbage")
    before = redis_client.hgetall(keys.config("acme"))
    done = crmsync(redis_url, "quota", "set", "acme", "120000")
    assert done.returncode == 2
    assert field in done.stderr
    assert "Traceback" not in done.stderr
    assert redis_client.hgetall(keys.config("acme")) == before


def test_quota_set_on_a_garbage_counter_saves_the_change_and_says_the_tenant_stays_invalid(
        bucket: CreditBucket, redis_client: redis.Redis, redis_url: str) -> None:
    GARBAGE["negative counter"](redis_client, bucket)
    done = crmsync(redis_url, "quota", "set", "acme", "120000")
    assert done.returncode == 1
    assert "window counter" in done.stderr
    assert redis_client.hget(keys.config("acme"), "limit") == "120000"
