"""The bucket against a plain Python model of its rules, driven by hypothesis on a real Redis."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from quota import CreditBucket, Grant
from tests.conftest import T0, FakeClock

DAY = 86_400
RESET_TIMES = ["00:00", "06:00", "12:30", "23:59"]


class BucketModel:
    """The rules, written out plainly: credits used per window, windows ending at the reset time of day."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.limit: int | None = None
        self.minute = 0
        self.reset_from: int | None = None
        self.used: dict[int, int] = {}

    def window_end(self) -> int:
        if self.reset_from is not None and self.now < self.reset_from:
            return self.reset_from
        offset = self.minute * 60
        return (self.now - offset) // DAY * DAY + offset + DAY

    def remaining(self) -> int:
        return max(0, (self.limit or 0) - self.used.get(self.window_end(), 0))

    def take(self, n: int) -> bool:
        end = self.window_end()
        if self.limit is None or self.used.get(end, 0) + n > self.limit:
            return False
        self.used[end] = self.used.get(end, 0) + n
        return True

    def refund(self, n: int, window_end: int | None) -> int:
        end = self.window_end()
        if window_end is not None and window_end != end:
            return 0
        back = min(n, self.used.get(end, 0))
        self.used[end] = self.used.get(end, 0) - back
        return back

    def configure(self, limit: int | None, reset_at: str | None) -> None:
        if reset_at is not None:
            minute = int(reset_at[:2]) * 60 + int(reset_at[3:])
            if minute != self.minute and self.limit is not None:
                self.reset_from = self.window_end()
            self.minute = minute
        if limit is not None:
            self.limit = limit


class BucketMachine(RuleBasedStateMachine):
    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        self.clock = FakeClock(T0)
        self.bucket = CreditBucket(client, clock=self.clock)
        self.model = BucketModel(T0)
        self.grants: list[Grant] = []

    @rule(limit=st.integers(100_000, 250_000), reset_at=st.none() | st.sampled_from(RESET_TIMES))
    def set_limit(self, limit: int, reset_at: str | None) -> None:
        self.bucket.set_limit("acme", limit, actor="model", reset_at=reset_at)
        self.model.configure(limit, reset_at)

    @precondition(lambda self: self.model.limit is not None)
    @rule(reset_at=st.sampled_from(RESET_TIMES))
    def set_reset_time(self, reset_at: str) -> None:
        self.bucket.set_limit("acme", self.model.limit, actor="model", reset_at=reset_at)
        self.model.configure(self.model.limit, reset_at)

    @rule(n=st.integers(1, 120_000) | st.integers(1, 5))
    def take(self, n: int) -> None:
        grant = self.bucket.take("acme", n)
        assert grant.granted == self.model.take(n)
        assert grant.remaining == self.model.remaining()
        assert grant.window_end == self.model.window_end()
        self.grants.append(grant)

    @rule(n=st.integers(1, 50_000), data=st.data())
    def refund(self, n: int, data: st.DataObject) -> None:
        grant = data.draw(st.none() | st.sampled_from(self.grants)) if self.grants else None
        window_end = grant.window_end if grant is not None else None
        assert self.bucket.refund("acme", n, grant=grant) == self.model.refund(n, window_end)

    @rule(seconds=st.integers(0, 3 * 3600) | st.integers(0, 2 * DAY))
    def advance_time(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    @invariant()
    def status_matches_model(self) -> None:
        status = self.bucket.status("acme")
        assert status.remaining == self.model.remaining()
        assert status.used == self.model.used.get(self.model.window_end(), 0)
        assert int(status.resets_at.timestamp()) == self.model.window_end()
        assert status.limit == self.model.limit


def test_bucket_follows_the_model(redis_url: str, redis_client: redis.Redis) -> None:
    BucketMachine.redis_url = redis_url
    run_state_machine_as_test(
        BucketMachine,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )


@pytest.mark.parametrize("minute", [0, 359, 1439])
def test_model_window_ends_on_the_reset_minute(minute: int) -> None:
    # Guards the model itself: a wrong model would make the stateful test meaningless.
    model = BucketModel(T0)
    model.minute = minute
    end = model.window_end()
    assert end % 60 == 0
    assert (end // 60) % (24 * 60) == minute
    assert 0 < end - model.now <= DAY
