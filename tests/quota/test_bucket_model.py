"""The bucket against a plain Python model of its rules, driven by hypothesis on a real Redis.

The model keeps credits in plain dicts (per daily window, per rolling hour) and every grant in a ledger; the
machine checks the bucket's answers against the model at every step, and the promises against the ledger:
normal takes never eat into the reserve; in rolling mode no 24 hours see more than the limit; whatever the
modes, reset times and switches, no 24 hours see more than twice the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from quota import CreditBucket, Grant, InvalidReserve
from quota.connection import connect
from tests.conftest import T0, FakeClock

DAY = 86_400
HOUR = 3_600
RESET_TIMES = ["00:00", "00:01", "06:00", "12:30", "23:59"]
TENANT = "acme"


@dataclass
class Entry:
    """A grant in the ledger: when, and how many (less what was refunded)."""

    at: int
    n: int


class BucketModel:
    """The rules, written out plainly."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.limit: int | None = None
        self.reserve = 0
        self.offset = 0
        self.rolling = False
        self.reset_from: int | None = None
        self.daily: dict[int, int] = {}  # window end -> used
        self.hourly: dict[int, int] = {}  # hour -> used

    # -- where credits are counted
    def first_end(self, start: int, offset: int) -> int:
        t = start + DAY
        return t + (offset - t) % DAY

    def window_end(self) -> int:
        if self.reset_from is not None:
            if self.now < self.reset_from:
                return self.reset_from
            if self.now < self.first_end(self.reset_from, self.offset):
                return self.first_end(self.reset_from, self.offset)
        return (self.now - self.offset) // DAY * DAY + self.offset + DAY

    def live_hours(self) -> dict[int, int]:
        hour = self.now // HOUR
        return {h: n for h, n in self.hourly.items() if hour - 25 < h}

    def used(self) -> int:
        return sum(self.live_hours().values()) if self.rolling else self.daily.get(self.window_end(), 0)

    def remaining(self) -> int:
        return max(0, (self.limit or 0) - self.used())

    def resets_at(self) -> int:
        if not self.rolling:
            return self.window_end()
        live = [h for h, n in self.live_hours().items() if n]
        return (min(live) + 25) * HOUR if live else self.now

    def where(self) -> int:
        return self.now // HOUR * HOUR if self.rolling else self.window_end()

    # -- what callers do
    def take(self, n: int, essential: bool) -> bool:
        if self.limit is None:
            return False
        cap = self.limit if essential else self.limit - self.reserve
        if self.used() + n > cap:
            return False
        if self.rolling:
            hour = self.now // HOUR
            self.hourly[hour] = self.hourly.get(hour, 0) + n
        else:
            self.daily[self.window_end()] = self.used() + n
        return True

    def refund(self, n: int, where: int, mode: str) -> int:
        if (mode == "rolling") != self.rolling:
            return 0  # a take of the other mode: its window ended with the switch
        if self.rolling:
            hour = where // HOUR
            if not self.now // HOUR - 25 < hour <= self.now // HOUR:
                return 0
            back = min(n, self.hourly.get(hour, 0))
            self.hourly[hour] = self.hourly.get(hour, 0) - back
        else:
            if where != self.window_end():
                return 0
            back = min(n, self.used())
            self.daily[where] = self.used() - back
        return back

    def configure(self, limit: int, reset_at: str | None, window: str | None, reserve: int | None) -> None:
        if (self.reserve if reserve is None else reserve) >= limit:
            raise InvalidReserve("refused")
        had_limit, was_rolling = self.limit is not None, self.rolling
        carried = self.used()
        old_end = self.window_end()
        rolling = was_rolling if window is None else window == "rolling"
        offset = self.offset if reset_at is None else int(reset_at[:2]) * HOUR + int(reset_at[3:]) * 60
        if had_limit and not rolling and not was_rolling and offset != self.offset:
            start = self.reset_from
            keep = (start is not None and self.now < self.first_end(start, self.offset)
                    and self.now < self.first_end(start, offset))
            self.reset_from = start if keep else old_end
        self.limit, self.offset, self.rolling = limit, offset, rolling
        self.reserve = self.reserve if reserve is None else reserve
        if carried:
            if rolling and not was_rolling:
                self.daily.pop(old_end, None)
                self.hourly = {self.now // HOUR: carried}
            elif not rolling and (was_rolling or self.window_end() != old_end):
                if was_rolling:
                    self.hourly = {}
                else:
                    self.daily.pop(old_end, None)
                self.daily[self.window_end()] = self.daily.get(self.window_end(), 0) + carried


class BucketMachine(RuleBasedStateMachine):
    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        client = connect(self.redis_url)  # one node, or the cluster under tests/cluster
        client.flushdb()
        self.clock = FakeClock(T0)
        self.bucket = CreditBucket(client, clock=self.clock)
        self.model = BucketModel(T0)
        self.grants: list[tuple[Grant, Entry]] = []
        self.ledger: list[Entry] = []
        self.rolling_first: int | None = None  # in rolling mode: the first ledger entry made in it
        self.max_limit = 0

    def _configure(self, limit: int, reset_at: str | None = None, window: str | None = None,
                   reserve: int | None = None) -> None:
        before = self.bucket.status(TENANT)
        try:
            self.model.configure(limit, reset_at, window, reserve)
        except InvalidReserve:
            with pytest.raises(InvalidReserve):
                self.bucket.set_limit(TENANT, limit, actor="model", reset_at=reset_at, window=window, reserve=reserve)
            assert self.bucket.status(TENANT) == before  # nothing was written
            return
        status = self.bucket.set_limit(TENANT, limit, actor="model", reset_at=reset_at, window=window,
                                       reserve=reserve)
        assert (status.limit, status.window, status.reserve) == (limit, window or before.window, self.model.reserve)
        self.max_limit = max(self.max_limit, limit)
        if not self.model.rolling:
            self.rolling_first = None
        elif self.rolling_first is None:
            self.rolling_first = len(self.ledger)

    @rule(limit=st.integers(100_000, 250_000), reset_at=st.none() | st.sampled_from(RESET_TIMES),
          window=st.none() | st.sampled_from(["daily", "rolling"]),
          reserve=st.none() | st.sampled_from([0, 1, 5_000, 99_999, 150_000]))
    def set_limit(self, limit: int, reset_at: str | None, window: str | None, reserve: int | None) -> None:
        self._configure(limit, reset_at, window, reserve)

    @precondition(lambda self: self.model.limit is not None)
    @rule(reset_at=st.sampled_from(RESET_TIMES))
    def set_reset_time(self, reset_at: str) -> None:
        assert self.model.limit is not None
        self._configure(self.model.limit, reset_at=reset_at)

    @precondition(lambda self: self.model.limit is not None)
    @rule(window=st.sampled_from(["daily", "rolling"]))
    def switch_mode(self, window: str) -> None:
        assert self.model.limit is not None
        self._configure(self.model.limit, window=window)

    @rule(n=st.integers(1, 120_000) | st.integers(1, 5), essential=st.booleans())
    def take(self, n: int, essential: bool) -> None:
        grant = self.bucket.take(TENANT, n, essential=essential)
        assert grant.granted == self.model.take(n, essential)
        assert grant.remaining == self.model.remaining()
        assert grant.window_end == self.model.where()
        assert int(grant.resets_at.timestamp()) == self.model.resets_at()
        if grant.granted:
            assert grant.taken == n
            if not essential:
                assert grant.remaining >= self.model.reserve  # the reserve is left for essential work
            entry = Entry(self.model.now, n)
            self.ledger.append(entry)
            self.grants.append((grant, entry))
            if self.rolling_first is not None:
                # Rolling: with this grant, the last 24 hours of the mode saw no more than the limit.
                recent = [e.n for e in self.ledger[self.rolling_first:] if e.at > self.model.now - DAY]
                assert sum(recent) <= grant.limit

    @precondition(lambda self: self.model.remaining() > 0)
    @rule(essential=st.booleans())
    def take_everything(self, essential: bool) -> None:
        # What a busy tenant does: spend all it may, so the limits are reached often.
        left = self.model.remaining() - (0 if essential else self.model.reserve)
        if left > 0:
            self.take(left, essential)

    @rule(extra=st.sampled_from([0, 1, 60, 600, HOUR]))
    def advance_to_reset(self, extra: int) -> None:
        self.advance_time(max(0, self.model.resets_at() - self.model.now) + extra)

    @precondition(lambda self: self.grants)
    @rule(n=st.integers(1, 150_000), data=st.data())
    def refund(self, n: int, data: st.DataObject) -> None:
        grant, entry = data.draw(st.sampled_from(self.grants))
        back = self.bucket.refund(TENANT, n, grant=grant)
        assert back == self.model.refund(min(n, grant.taken), grant.window_end, grant.window)
        assert back <= grant.taken
        entry.n -= back

    @rule(seconds=st.sampled_from([1, 59, 60, 600, HOUR - 1, HOUR, 2 * HOUR, 12 * HOUR, DAY - 1, DAY, DAY + HOUR])
          | st.integers(0, 2 * DAY))
    def advance_time(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    @invariant()
    def status_matches_model(self) -> None:
        status = self.bucket.status(TENANT)
        assert status.limit == self.model.limit
        assert (status.used, status.remaining) == (self.model.used(), self.model.remaining())
        assert int(status.resets_at.timestamp()) == self.model.resets_at()
        assert (status.window, status.reserve) == ("rolling" if self.model.rolling else "daily", self.model.reserve)
        assert status.config_error is None

    @invariant()
    def no_24_hours_see_more_than_twice_the_limit(self) -> None:
        # Whatever the modes, reset times and switches: a daily reset allows 2x, nothing allows more.
        assert sum(e.n for e in self.ledger if e.at > self.model.now - DAY) <= 2 * self.max_limit


def test_bucket_follows_the_model(redis_url: str, redis_client: redis.Redis) -> None:
    BucketMachine.redis_url = redis_url
    run_state_machine_as_test(
        BucketMachine,
        settings=settings(max_examples=200, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )


@pytest.mark.parametrize("offset", [0, 359 * 60, 1439 * 60])
def test_model_window_ends_on_the_reset_minute(offset: int) -> None:
    # Guards the model itself: a wrong model would make the stateful test meaningless.
    model = BucketModel(T0)
    model.offset = offset
    end = model.window_end()
    assert end % DAY == offset
    assert 0 < end - model.now <= DAY
    model.reset_from = end
    assert model.first_end(end, (offset + 60) % DAY) - end >= DAY
