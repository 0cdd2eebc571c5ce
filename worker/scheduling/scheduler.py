"""The scheduler: queues incremental pulls when their schedules fall due, one instance at a time.

Several schedulers may run for availability. Only the holder of a Redis lease (``crmsync:scheduler:lease``,
taken with ``SET NX PX`` and renewed by compare-and-set) queues anything; when the holder dies its lease
expires and another instance takes over on its next tick.

A tick works through the due entries in batches (``worker.scheduling.tick``): a page of due entries is read
(with a lease renewal in the same round trip), their schedules and any pauses in one pipeline, the due ones are
*claimed* in one script call, their pulls queued together (``worker.enqueue.enqueue_pulls``: pipelined reads
and writes, one broker batch), and the claimed entries moved on to their next due time. A handful of round
trips per batch, whatever its size.

The lease alone cannot rule out a double pull: a holder that stalls past its TTL (a GC pause, a frozen VM)
wakes up believing it still leads while another instance already does. So each due entry is claimed
before its pull is queued: its due time moves only if it still has the score that was read (compare-and-set
in one Lua step). Two instances can both read an entry; exactly one moves it and queues. A claim moves the
entry to a *hold*, a lease TTL ahead, and only once its pull is queued to its next due time: a scheduler that
dies mid-batch leaves its claimed entries to come due again when the hold ends (about when a standby takes
over), and one whose lease is lost before it sends, or whose enqueue fails, hands them back at once.

Paused tenants are skipped and stay due (an essential schedule's tenant only when its pause holds essential
jobs too): the paused index is read once per tick and a paused tenant's pause once per tick, so their entries
cost no round trip each. A pull of the schedule's priority that is already queued, running or parked counts as
that slot's pull. Schedules that lost their due entry (a hand edit) are found by a sweep of a batch of
schedules per tick, not by reading every schedule every tick.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis
import structlog

from quota.errors import InvalidInput
from quota.replies import text
from quota.scripts import LuaScript
from worker import keys
from worker.scheduling.pipeline import Client
from worker.scheduling.tick import CLAIM, DEFAULT_BATCH, RENEW, DueEntry, TickPass, TickReport, claim_args, next_due

__all__ = ["DEFAULT_BATCH", "DueEntry", "Scheduler", "TickReport", "default_instance_id", "next_due"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]

DEFAULT_TICK_S = 5.0
DEFAULT_LEASE_TTL_S = 30.0
log = structlog.get_logger("crmsync.scheduler")

_RELEASE = LuaScript("lease_release", package="worker")


def default_instance_id() -> str:
    """Host, pid and a random suffix: unique per process, readable in ``GET crmsync:scheduler:lease``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """One scheduler instance. ``tick()`` does one pass; ``run(stop)`` ticks until ``stop`` is set.

    ``clock`` gives the epoch seconds that due times are compared with; ``sleep`` waits between ticks
    (by default a wait on the stop event, so a stop request ends the wait at once). The lease expires on
    the Redis server's own clock, ``lease_ttl_s`` after the last renewal; claimed entries are held for
    ``lease_ttl_s`` on ``clock``. ``batch`` due entries are claimed and queued at a time.
    """

    def __init__(
        self,
        client: Client,
        *,
        instance_id: str | None = None,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
        tick_s: float = DEFAULT_TICK_S,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if tick_s <= 0 or lease_ttl_s < 2 * tick_s:
            # A lease shorter than two ticks would lapse between renewals and flap between instances.
            raise InvalidInput(f"lease ttl {lease_ttl_s}s must be at least twice the tick {tick_s}s (> 0)")
        if batch < 1:
            raise InvalidInput(f"batch {batch} must be at least 1")
        self.redis = client
        self.instance_id = instance_id or default_instance_id()
        self.clock = clock
        self.sleep = sleep
        self.tick_s = tick_s
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.hold_s = lease_ttl_s
        self.batch = batch
        self._leader = False
        self._sweep_cursor = 0
        self.log = log.bind(instance=self.instance_id)

    # -- the lease ------------------------------------------------------------------------------------------

    def renew_lease(self) -> bool:
        """Extend the lease if this instance holds it; return whether it does."""
        return bool(RENEW(self.redis.execute_command, [keys.SCHEDULER_LEASE], [self.instance_id, self.lease_ttl_ms]))

    def hold_lease(self) -> bool:
        """Renew the lease, or take it if nobody holds it; return whether this instance now holds it."""
        held = self.renew_lease() or bool(
            self.redis.set(keys.SCHEDULER_LEASE, self.instance_id, nx=True, px=self.lease_ttl_ms)
        )
        self.note_lease(held)
        return held

    def note_lease(self, held: bool) -> None:
        """Log a change of leadership once."""
        if held != self._leader:
            self.log.info("scheduler.lease_acquired" if held else "scheduler.lease_lost")
            self._leader = held

    def release(self) -> bool:
        """Give the lease up (only if this instance holds it), so another takes over without waiting."""
        released = bool(_RELEASE(self.redis.execute_command, [keys.SCHEDULER_LEASE], [self.instance_id]))
        if released:
            self.log.info("scheduler.lease_released")
        self._leader = False
        return released

    # -- due entries ----------------------------------------------------------------------------------------

    def due(self, now: float) -> list[DueEntry]:
        """Every entry due at ``now``, oldest first (for tools and tests; a tick reads them a batch at a time)."""
        rows = cast(list[tuple[Any, float]],
                    self.redis.zrangebyscore(keys.SCHEDULE_DUE, "-inf", now, withscores=True))
        return [DueEntry(text(m) or "", float(score)) for m, score in rows]

    def claim(self, entry: DueEntry, new_due: float | None) -> bool:
        """Move ``entry`` to ``new_due`` (``None`` removes it) if nobody moved it since it was read."""
        [moved] = CLAIM(self.redis.execute_command, [keys.SCHEDULE_DUE], claim_args([(entry.member, entry.due,
                                                                                      new_due)]))
        return bool(moved)

    def _sweep(self, now: float) -> None:
        # A schedule whose due entry went missing (a hand edit, a partial restore, an admin command that died
        # between its two writes) would never run: make it due. A batch of schedules per tick, so a full
        # sweep of 300,000 takes 300 ticks instead of every tick reading every schedule.
        cursor, rows = cast(tuple[int, dict[Any, Any]],
                            self.redis.hscan(keys.SCHEDULES, self._sweep_cursor, count=self.batch))
        self._sweep_cursor = int(cursor)
        if rows:
            self.redis.zadd(keys.SCHEDULE_DUE, {text(m) or "": now for m in rows}, nx=True)

    # -- one pass -------------------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """One pass: if this instance holds the lease, queue a pull for every due schedule it can claim."""
        now = self.clock()
        report = TickReport(self.instance_id, now)
        if not self.hold_lease():
            return report
        report.leader = True
        self._sweep(now)
        TickPass(self, now, report).run()
        if report.enqueued or report.invalid or report.failed or report.lost_lease:
            self.log.info("scheduler.tick", enqueued=len(report.enqueued), active=len(report.active),
                          paused=len(report.paused), invalid=len(report.invalid), lost_race=len(report.lost_race),
                          failed=len(report.failed), lost_lease=report.lost_lease, batches=report.batches)
        return report

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
