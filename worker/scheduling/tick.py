"""One scheduler pass, a batch of due entries at a time, in a handful of round trips per batch.

Per batch: (1) the lease renewed and a page of due entries read, in one pipeline; (2) their intervals and
priorities, and the pause of each paused tenant not yet seen this pass, in one pipeline; (3) the entries to
act on claimed in one script call (``schedule_claim.lua``): due ones to a hold, garbage a minute on, orphans
removed; (4) their pulls queued by ``worker.enqueue.enqueue_pulls`` (reads, sequence numbers, one broker
batch, records), the lease checked once more before anything is sent; (5) the queued entries moved from the
hold to their next due time and the failed ones handed back, in one script call.

Entries left due (paused tenants, failures handed back, races lost) stay in the due set, so the next page is
read from the last score seen, past the entries at that score left behind: a page never holds an entry twice
and the pass ends when a page comes back short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import redis

from quota.errors import InvalidInput
from quota.replies import text
from quota.scripts import LuaScript
from worker import keys
from worker.enqueue import PullRequest, Queued, enqueue_pulls
from worker.jobs.parking import PauseState
from worker.jobs.priority import Priority
from worker.scheduling import pipeline
from worker.scheduling.schedules import MIN_INTERVAL_S, check_stored_interval, check_stored_priority, parse_member

if TYPE_CHECKING:
    from worker.scheduling.scheduler import Scheduler

__all__ = ["CLAIM", "DEFAULT_BATCH", "RENEW", "DueEntry", "TickPass", "TickReport", "claim_args", "next_due"]

# Due entries per batch: a few round trips each, so 1,000 makes them negligible while one batch's replies stay
# small (a page of members, their schedules, one broker pipeline of 1,000 messages).
DEFAULT_BATCH = 1000
RENEW = LuaScript("lease_renew", package="worker")
CLAIM = LuaScript("schedule_claim", package="worker")


def next_due(due: float, interval: int, now: float) -> float:
    """The slot after ``due``; when even that has passed, ``now + interval`` (missed slots make no burst)."""
    following = due + interval
    return following if following > now else now + interval


def claim_args(moves: Sequence[tuple[str, float, float | None]]) -> list[str]:
    """``schedule_claim.lua``'s arguments for ``(member, score read, new score or None to remove)`` moves."""
    return [arg for member, old, new in moves for arg in (member, repr(old), "" if new is None else repr(new))]


@dataclass(frozen=True)
class DueEntry:
    """A schedule entry read from the due set, with the score it had (what a claim compares against)."""

    member: str
    due: float


@dataclass
class TickReport:
    """What one pass did, member by member (for logs and tests)."""

    instance: str
    now: float
    leader: bool = False
    enqueued: dict[str, str] = field(default_factory=dict)  # member -> new job id
    active: dict[str, str] = field(default_factory=dict)  # member -> id of the pull already under way
    paused: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    lost_race: list[str] = field(default_factory=list)  # another instance claimed it first
    failed: list[str] = field(default_factory=list)  # claimed, enqueue failed, slot handed back
    lost_lease: bool = False
    batches: int = 0

    @property
    def claimed(self) -> list[str]:
        """Members whose slot this pass took (queued a pull or found one under way)."""
        return [*self.enqueued, *self.active]


@dataclass(frozen=True)
class _Due:
    """A due entry that may be queued: what its pull needs."""

    entry: DueEntry
    tenant: str
    sobject: str
    interval: int
    priority: Priority


class _LeaseLost(Exception):
    """The lease was gone when the batch was about to be sent."""



class TickPass:
    """One pass of ``scheduler`` at ``now``, filling ``report``."""

    def __init__(self, scheduler: Scheduler, now: float, report: TickReport) -> None:
        self.s = scheduler
        self.redis = scheduler.redis
        self.now = now
        self.report = report
        self.hold = now + scheduler.hold_s  # set again for each batch: a long pass holds each a full TTL
        # The paused index, once per pass: only its tenants' pauses are read (once each), so a paused tenant's
        # entries cost no round trip each.
        self.paused_index = {text(t) or "" for t in cast(set[Any], self.redis.smembers(keys.PAUSED))}
        self.pauses: dict[str, PauseState | None] = {}  # each paused-index tenant's pause, once read
        self.seen: set[str] = set()
        self.floor: float | None = None  # score of the last entry read; None: from the start
        self.left_at_floor = 0  # entries at that score left in the due set, to page past

    def run(self) -> None:
        """Work through every due entry, a batch at a time, until none is left or the lease is lost."""
        while True:
            page = self._page()
            if page is None:
                self.report.lost_lease = True
                self.s.note_lease(False)
                return
            if not page:
                return
            self.report.batches += 1
            left = self._batch(page)
            if left is None:
                return
            last = page[-1].due
            at_last = sum(1 for e in page if e.member in left and e.due == last)
            self.left_at_floor = (self.left_at_floor if last == self.floor else 0) + at_last
            self.floor = last
            if len(page) < self.s.batch:
                return

    def _page(self) -> list[DueEntry] | None:
        """The next page of due entries, read with a lease renewal; ``None`` if the lease is lost."""
        low = "-inf" if self.floor is None else repr(self.floor)
        renewed, rows = pipeline.send(self.redis, [
            RENEW.command([keys.SCHEDULER_LEASE], [self.s.instance_id, self.s.lease_ttl_ms]),
            ("ZRANGEBYSCORE", keys.SCHEDULE_DUE, low, repr(self.now), "WITHSCORES", "LIMIT", self.left_at_floor,
             self.s.batch),
        ], [RENEW])
        for reply in (renewed, rows):
            if isinstance(reply, Exception):
                raise reply
        if not renewed:
            return None
        flat = cast(list[Any], rows)
        return [DueEntry(text(flat[i]) or "", float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def _batch(self, page: list[DueEntry]) -> set[str] | None:
        """Act on one page; return the members left in the due set (``None``: stop, the lease is lost)."""
        left = {e.member for e in page if e.member in self.seen}  # read again after a shift: left as it is
        fresh = [e for e in page if e.member not in left]
        self.seen.update(e.member for e in fresh)
        due, moves = self._sort(fresh, left)
        claimed = self._claim(due, moves, left)
        if not claimed:
            return left
        try:
            outcomes = enqueue_pulls(self.redis, [PullRequest(d.tenant, d.sobject, d.priority) for d in claimed],
                                     before_send=self._check_lease)
        except _LeaseLost:
            self._settle([], claimed)
            self.report.lost_lease = True
            self.s.note_lease(False)
            left.update(d.entry.member for d in claimed)
            return None
        except (redis.RedisError, OSError) as exc:
            outcomes = [exc] * len(claimed)
        done = []
        failed = []
        for item, outcome in zip(claimed, outcomes, strict=True):
            if isinstance(outcome, Queued):
                (self.report.enqueued if outcome.new else self.report.active)[item.entry.member] = outcome.job_id
                done.append(item)
            else:
                self.s.log.error("scheduler.enqueue_failed", member=item.entry.member, error=repr(outcome))
                self.report.failed.append(item.entry.member)
                failed.append(item)
                left.add(item.entry.member)
        self._settle(done, failed)
        return left

    def _sort(self, fresh: list[DueEntry], left: set[str]) -> tuple[list[_Due], list[tuple[str, float, float | None]]]:
        """Read what the fresh entries need; return the ones to queue, and the moves for the garbage."""
        members = [e.member for e in fresh]
        tenants = {e.member.partition("/")[0] for e in fresh}
        unread = sorted(t for t in tenants & self.paused_index if t not in self.pauses)
        if not members:
            return [], []
        intervals, priorities, *pauses = pipeline.send(self.redis, [
            ("HMGET", keys.SCHEDULES, *members), ("HMGET", keys.SCHEDULE_PRIORITY, *members),
            *[("HGETALL", keys.pause(t)) for t in unread]])
        for reply in (intervals, priorities, *pauses):
            if isinstance(reply, Exception):
                raise reply
        self.pauses.update((t, PauseState.parse(t, raw)) for t, raw in zip(unread, pauses, strict=True))
        due: list[_Due] = []
        moves: list[tuple[str, float, float | None]] = []
        for entry, raw_interval, raw_priority in zip(fresh, intervals, priorities, strict=True):
            try:
                tenant, sobject = parse_member(entry.member)
                if raw_interval is None:
                    # A due entry without a schedule: left over from a removal that lost its other half.
                    moves.append((entry.member, entry.due, None))
                    continue
                interval = check_stored_interval(raw_interval)
                priority = check_stored_priority(raw_priority)
            except InvalidInput as exc:
                # Garbage someone wrote by hand: skip it, and look again in a while rather than on every tick.
                self.s.log.warning("scheduler.invalid_entry", member=entry.member, error=str(exc))
                moves.append((entry.member, entry.due, self.now + MIN_INTERVAL_S))
                continue
            pause = self.pauses.get(tenant)
            if pause is not None and pause.holds(priority):
                # Left due: the first tick after the resume queues its pull.
                self.report.paused.append(entry.member)
                left.add(entry.member)
                continue
            due.append(_Due(entry, tenant, sobject, interval, priority))
        return due, moves

    def _claim(self, due: list[_Due], moves: list[tuple[str, float, float | None]], left: set[str]) -> list[_Due]:
        """Claim the due entries (to the hold) and move the garbage, in one script call; return those claimed."""
        self.hold = max(self.now, self.s.clock()) + self.s.hold_s
        every = moves + [(d.entry.member, d.entry.due, self.hold) for d in due]
        if not every:
            return []
        won = cast(list[int], CLAIM(self.redis.execute_command, [keys.SCHEDULE_DUE], claim_args(every)))
        for (member, _, new), ok in zip(moves, won, strict=False):
            self.report.invalid.append(member)
            if ok and new is None:
                self.s.log.warning("scheduler.orphan_removed", member=member)
            elif not ok:
                left.add(member)
        claimed = []
        for item, ok in zip(due, won[len(moves):], strict=True):
            if ok:
                claimed.append(item)
            else:
                self.report.lost_race.append(item.entry.member)
                left.add(item.entry.member)
        return claimed

    def _check_lease(self) -> None:
        if not self.s.renew_lease():
            raise _LeaseLost

    def _settle(self, done: list[_Due], back: list[_Due]) -> None:
        """Move queued entries from the hold to their next due time, hand the others back, in one call. Should
        this fail, the hold ends a lease TTL on and the entries come due again: nothing is lost."""
        moves: list[tuple[str, float, float | None]] = [
            (d.entry.member, self.hold, next_due(d.entry.due, d.interval, self.now)) for d in done]
        moves += [(d.entry.member, self.hold, d.entry.due) for d in back]
        if not moves:
            return
        try:
            CLAIM(self.redis.execute_command, [keys.SCHEDULE_DUE], claim_args(moves))
        except redis.RedisError:
            self.s.log.warning("scheduler.settle_failed", entries=len(moves))
