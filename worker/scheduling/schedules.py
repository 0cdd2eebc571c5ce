"""Pull schedules in Redis: which tenant/object is pulled how often, at what priority, and when each is next due.

``crmsync:schedules`` maps ``TENANT/OBJECT`` to an interval in whole seconds; ``crmsync:schedule:due`` scores
the same member by the epoch second its next pull is due; ``crmsync:schedule:priority`` maps it to the priority
its pulls are queued with (absent: ``normal``, as for schedules set before priorities existed). Three keys,
so on a Redis Cluster three slots: no transaction can hold them, so they are written in an order a scheduler
can read at any moment: a new schedule's interval and priority before its due entry, a removed schedule's due
entry before the rest. A scheduler never queues a schedule with no interval (a due entry alone is removed as an
orphan), and one whose due entry is missing is made due by the scheduler's sweep.
The scheduler (``worker.scheduling.scheduler``) reads them; admins change them live with ``crmsync schedule``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from quota.connection import RedisClient
from quota.errors import InvalidInput
from quota.replies import text
from quota.validation import validate_tenant
from worker import keys
from worker.errors import InvalidInterval
from worker.jobs.priority import DEFAULT_PRIORITY, Priority, check_priority
from worker.salesforce.soql import check_name

__all__ = [
    "MAX_INTERVAL_S",
    "MIN_INTERVAL_S",
    "Schedule",
    "ScheduleStore",
    "check_stored_interval",
    "check_stored_priority",
    "format_interval",
    "member",
    "parse_interval",
    "parse_member",
]

# Below a minute a schedule mostly spends credits on empty pulls; above 30 days it is better done by hand.
MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 30 * 86_400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_INTERVAL = re.compile(r"([0-9]{1,7})([smhd])")



def parse_interval(value: object) -> int:
    """Return ``value`` (``30s``, ``15m``, ``2h``, ``1d``) in seconds, or raise ``InvalidInterval``."""
    match = _INTERVAL.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise InvalidInterval(f"invalid interval {value!r}: use a whole number and a unit s, m, h or d (e.g. 15m)")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise InvalidInterval(
            f"invalid interval {value!r}: schedules run every {format_interval(MIN_INTERVAL_S)} "
            f"to {format_interval(MAX_INTERVAL_S)}"
        )
    return seconds


def format_interval(seconds: int) -> str:
    """The shortest exact spelling of ``seconds`` in the units ``parse_interval`` reads (``900`` -> ``15m``)."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def member(tenant: str, sobject: str) -> str:
    """The ``TENANT/OBJECT`` member naming one schedule (both checked first)."""
    return f"{validate_tenant(tenant)}/{check_name(sobject, 'object')}"


def parse_member(raw: str) -> tuple[str, str]:
    """Split a stored member into ``(tenant, object)``; raise ``InvalidInput`` if either part is invalid."""
    tenant, sep, sobject = raw.partition("/")
    if not sep:
        raise InvalidInput(f"schedule entry {raw!r} is not TENANT/OBJECT")
    return validate_tenant(tenant), check_name(sobject, "object")



@dataclass(frozen=True)
class Schedule:
    """One schedule as stored; ``interval`` is ``None`` and ``error`` says why when the entry is unusable."""

    member: str
    interval: int | None
    due: float | None
    error: str = ""
    priority: Priority = DEFAULT_PRIORITY

    @property
    def tenant(self) -> str:
        """The tenant part of the member (as stored, even if invalid)."""
        return self.member.partition("/")[0]

    @property
    def sobject(self) -> str:
        """The object part of the member (as stored, even if invalid)."""
        return self.member.partition("/")[2]


def check_stored_interval(raw: object) -> int:
    """A stored interval as seconds, or ``InvalidInterval`` if someone wrote garbage into the hash."""
    value = text(raw) or ""
    if not value.isdigit() or not MIN_INTERVAL_S <= int(value) <= MAX_INTERVAL_S:
        raise InvalidInterval(f"stored interval {value!r} is not a whole number of seconds in range")
    return int(value)


def check_stored_priority(raw: object) -> Priority:
    """A stored priority (``None``: never set, so ``normal``), or ``InvalidPriority`` for garbage written by hand."""
    return DEFAULT_PRIORITY if raw is None else check_priority(text(raw))


class ScheduleStore:
    """Adds, removes and lists schedules."""

    def __init__(self, client: RedisClient, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.clock = clock

    def set(self, tenant: str, sobject: str, interval: int, priority: Priority | None = None) -> Schedule:
        """Pull ``sobject`` for ``tenant`` every ``interval`` seconds at ``priority``; return the stored schedule.

        ``priority`` ``None`` keeps the schedule's priority (a new schedule's is ``normal``). A new schedule is
        due at once. Changing an existing one keeps its due time unless the new interval would bring it sooner
        (``now + interval``), so shortening takes effect without waiting out the old one. Bad input raises an
        ``InvalidInput`` before anything is written.
        """
        name = member(tenant, sobject)
        if isinstance(interval, bool) or not isinstance(interval, int):
            raise InvalidInterval(f"invalid interval {interval!r}: a whole number of seconds")
        parse_interval(f"{interval}s")  # the same range check the CLI applies
        if priority is not None:
            check_priority(priority)
        now = self.clock()
        first = self.redis.pipeline(transaction=False)
        first.hset(keys.SCHEDULES, name, str(interval))
        if priority is not None:
            first.hset(keys.SCHEDULE_PRIORITY, name, priority)
        first.execute()
        then = self.redis.pipeline(transaction=False)  # one key each: ordered on its node
        then.zadd(keys.SCHEDULE_DUE, {name: now}, nx=True)
        then.zadd(keys.SCHEDULE_DUE, {name: now + interval}, lt=True)
        then.zscore(keys.SCHEDULE_DUE, name)
        then.hget(keys.SCHEDULE_PRIORITY, name)
        *_, due, stored = then.execute()
        return Schedule(name, interval, float(due), priority=check_stored_priority(stored))

    def remove(self, tenant: str, sobject: str) -> bool:
        """Stop pulling ``sobject`` on a schedule for ``tenant``; return whether there was a schedule."""
        name = member(tenant, sobject)
        self.redis.zrem(keys.SCHEDULE_DUE, name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(keys.SCHEDULES, name)
        pipe.hdel(keys.SCHEDULE_PRIORITY, name)
        removed, _ = pipe.execute()
        return bool(removed)

    def all(self) -> list[Schedule]:
        """Every schedule and every due entry, sorted by member; unusable entries carry an ``error``."""
        intervals = {text(k): v for k, v in cast(dict[Any, Any], self.redis.hgetall(keys.SCHEDULES)).items()}
        priorities = {text(k): v for k, v in
                      cast(dict[Any, Any], self.redis.hgetall(keys.SCHEDULE_PRIORITY)).items()}
        dues = {text(m): float(s) for m, s in
                cast(list[tuple[Any, float]], self.redis.zrange(keys.SCHEDULE_DUE, 0, -1, withscores=True))}
        result = []
        for name in sorted(set(intervals) | set(dues)):
            error = ""
            interval: int | None = None
            priority = DEFAULT_PRIORITY
            try:
                parse_member(name)
                if name not in intervals:
                    raise InvalidInput("due entry without a schedule")
                interval = check_stored_interval(intervals[name])
                priority = check_stored_priority(priorities.get(name))
            except InvalidInput as exc:
                interval, error = None, str(exc)
            result.append(Schedule(name, interval, dues.get(name), error, priority))
        return result
