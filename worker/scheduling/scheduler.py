"""The scheduler: queues incremental pulls when their schedules fall due, one instance at a time.

Several schedulers may run for availability. Only the holder of a Redis lease (``crmsync:scheduler:lease``,
taken with ``SET NX PX`` and renewed by compare-and-set) queues anything; when the holder dies its lease
expires and another instance takes over on its next tick.

The lease alone cannot rule out a double pull: a holder that stalls past its TTL (a GC pause, a frozen VM)
wakes up believing it still leads while another instance already does. So every due entry is also *claimed*
before its pull is queued: its due time moves to the next slot only if it still has the score that was read
(compare-and-set in one Lua step). Two instances can both read an entry; exactly one moves it and queues.

A claimed slot whose enqueue fails is handed back (its old due time restored if nothing moved it since), so
a Redis hiccup delays a pull instead of skipping it. Paused tenants are skipped and stay due (an essential
schedule's tenant only when its pause holds essential jobs too); a pull of the schedule's priority that is
already queued, running or parked counts as that slot's pull (``enqueue_pull`` would return it anyway).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import structlog

from quota.errors import InvalidInput
from quota.replies import text
from quota.scripts import LuaScript
from worker import keys
from worker.enqueue import active_pull, enqueue_pull
from worker.jobs.parking import PauseStore
from worker.scheduling.schedules import MIN_INTERVAL_S, check_stored_interval, check_stored_priority, parse_member

__all__ = ["DueEntry", "Scheduler", "TickReport", "default_instance_id", "next_due"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]

DEFAULT_TICK_S = 5.0
DEFAULT_LEASE_TTL_S = 30.0
log = structlog.get_logger("crmsync.scheduler")

_RENEW = LuaScript("lease_renew", package="worker")
_RELEASE = LuaScript("lease_release", package="worker")
_CLAIM = LuaScript("schedule_claim", package="worker")



def next_due(due: float, interval: int, now: float) -> float:
    """The slot after ``due``; when even that has passed, ``now + interval`` (missed slots make no burst)."""
    following = due + interval
    return following if following > now else now + interval


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

    @property
    def claimed(self) -> list[str]:
        """Members whose slot this pass took (queued a pull or found one under way)."""
        return [*self.enqueued, *self.active]



def default_instance_id() -> str:
    """Host, pid and a random suffix: unique per process, readable in ``GET crmsync:scheduler:lease``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """One scheduler instance. ``tick()`` does one pass; ``run(stop)`` ticks until ``stop`` is set.

    ``clock`` gives the epoch seconds that due times are compared with; ``sleep`` waits between ticks
    (by default a wait on the stop event, so a stop request ends the wait at once). The lease expires on
    the Redis server's own clock, ``lease_ttl_s`` after the last renewal.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        instance_id: str | None = None,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
        tick_s: float = DEFAULT_TICK_S,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> None:
        if tick_s <= 0 or lease_ttl_s < 2 * tick_s:
            # A lease shorter than two ticks would lapse between renewals and flap between instances.
            raise InvalidInput(f"lease ttl {lease_ttl_s}s must be at least twice the tick {tick_s}s (> 0)")
        self.redis = client
        self.instance_id = instance_id or default_instance_id()
        self.clock = clock
        self.sleep = sleep
        self.tick_s = tick_s
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.pauses = PauseStore(client)
        self._leader = False
        self.log = log.bind(instance=self.instance_id)

    # -- the lease ------------------------------------------------------------------------------------------

    def renew_lease(self) -> bool:
        """Extend the lease if this instance holds it; return whether it does."""
        return bool(_RENEW(self.redis.execute_command, [keys.SCHEDULER_LEASE], [self.instance_id, self.lease_ttl_ms]))

    def hold_lease(self) -> bool:
        """Renew the lease, or take it if nobody holds it; return whether this instance now holds it."""
        held = self.renew_lease() or bool(
            self.redis.set(keys.SCHEDULER_LEASE, self.instance_id, nx=True, px=self.lease_ttl_ms)
        )
        if held != self._leader:
            self.log.info("scheduler.lease_acquired" if held else "scheduler.lease_lost")
            self._leader = held
        return held

    def release(self) -> bool:
        """Give the lease up (only if this instance holds it), so another takes over without waiting."""
        released = bool(_RELEASE(self.redis.execute_command, [keys.SCHEDULER_LEASE], [self.instance_id]))
        if released:
            self.log.info("scheduler.lease_released")
        self._leader = False
        return released

    # -- due entries ----------------------------------------------------------------------------------------

    def due(self, now: float) -> list[DueEntry]:
        """Every entry due at ``now``, oldest first (all of them: paused ones stay due and must not crowd out
        the rest)."""
        rows = cast(list[tuple[Any, float]],
                    self.redis.zrangebyscore(keys.SCHEDULE_DUE, "-inf", now, withscores=True))
        return [DueEntry(text(m), float(score)) for m, score in rows]

    def claim(self, entry: DueEntry, new_due: float | None) -> bool:
        """Move ``entry`` to ``new_due`` (``None`` removes it) if nobody moved it since it was read."""
        args = [entry.member, repr(entry.due), "" if new_due is None else repr(new_due)]
        return bool(_CLAIM(self.redis.execute_command, [keys.SCHEDULE_DUE], args))

    def _repair(self, now: float) -> None:
        # A schedule whose due entry went missing (a hand edit, a partial restore) would never run: make it due.
        members = cast(list[Any], self.redis.hkeys(keys.SCHEDULES))
        if members:
            self.redis.zadd(keys.SCHEDULE_DUE, {text(m): now for m in members}, nx=True)

    # -- one pass -------------------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """One pass: if this instance holds the lease, queue a pull for every due schedule it can claim."""
        now = self.clock()
        report = TickReport(self.instance_id, now)
        if not self.hold_lease():
            return report
        report.leader = True
        self._repair(now)
        entries = self.due(now)
        intervals: list[Any] = []
        priorities: list[Any] = []
        if entries:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(keys.SCHEDULES, [e.member for e in entries])
            pipe.hmget(keys.SCHEDULE_PRIORITY, [e.member for e in entries])
            intervals, priorities = pipe.execute()
        for entry, raw_interval, raw_priority in zip(entries, intervals, priorities, strict=True):
            # Renewing per entry keeps a long pass inside the lease and stops a holder that lost it promptly;
            # the claim below is what makes a late stop harmless.
            if not self.renew_lease():
                report.lost_lease = True
                self.hold_lease()  # logs the loss
                break
            self._one(entry, raw_interval, raw_priority, now, report)
        if report.enqueued or report.invalid or report.failed or report.lost_lease:
            self.log.info("scheduler.tick", due=len(entries), enqueued=len(report.enqueued),
                          active=len(report.active), paused=len(report.paused), invalid=len(report.invalid),
                          lost_race=len(report.lost_race), failed=len(report.failed), lost_lease=report.lost_lease)
        return report

    def _one(self, entry: DueEntry, raw_interval: Any, raw_priority: Any, now: float, report: TickReport) -> None:
        try:
            tenant, sobject = parse_member(entry.member)
            if raw_interval is None:
                # A due entry without a schedule: left over from a removal that lost its other half.
                if self.claim(entry, None):
                    self.log.warning("scheduler.orphan_removed", member=entry.member)
                report.invalid.append(entry.member)
                return
            interval = check_stored_interval(raw_interval)
            priority = check_stored_priority(raw_priority)
        except InvalidInput as exc:
            # Garbage someone wrote by hand: skip it, and look again in a while rather than on every tick.
            if self.claim(entry, now + MIN_INTERVAL_S):
                self.log.warning("scheduler.invalid_entry", member=entry.member, error=str(exc))
            report.invalid.append(entry.member)
            return
        pause = self.pauses.get(tenant)
        if pause is not None and pause.holds(priority):
            # Left due: the first tick after the resume queues its pull.
            self.log.debug("scheduler.paused_skip", member=entry.member)
            report.paused.append(entry.member)
            return
        new_due = next_due(entry.due, interval, now)
        if not self.claim(entry, new_due):
            report.lost_race.append(entry.member)
            return
        try:
            existing = active_pull(self.redis, tenant, sobject, priority)
            if existing is not None:
                # That pull is this slot's: enqueue_pull would return it too, and it is not counted as new.
                report.active[entry.member] = existing
                return
            report.enqueued[entry.member] = enqueue_pull(self.redis, tenant, sobject, priority=priority)
        except Exception:
            # Hand the slot back so the next tick retries instead of waiting a whole interval.
            with contextlib.suppress(redis.RedisError):
                self.claim(DueEntry(entry.member, new_due), entry.due)
            self.log.exception("scheduler.enqueue_failed", member=entry.member)
            report.failed.append(entry.member)

    # -- the loop -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Tick every ``tick_s`` seconds until ``stop`` is set; a failed tick is logged and the loop goes on.

        The lease is released on the way out, so a stopped scheduler hands over at once.
        """
        self.log.info("scheduler.started", tick_s=self.tick_s, lease_ttl_ms=self.lease_ttl_ms)
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:
                    self.log.exception("scheduler.tick_failed")
                if self.sleep is not None:
                    self.sleep(self.tick_s)
                else:
                    stop.wait(self.tick_s)
        finally:
            try:
                self.release()
            except redis.RedisError:
                self.log.warning("scheduler.release_failed")
            self.log.info("scheduler.stopped")
