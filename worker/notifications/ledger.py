"""The delivery ledger: one Redis record per delivery (one notification to one webhook or to email), so that
however many copies of its broker message run, and whenever workers die, no delivery is ever sent twice.

The record (``keys.delivery``, a hash) holds ``state``, ``attempts`` (attempts started), ``until`` (while
``sending``: when the attempt's lease ends), ``next_at`` (while ``waiting``: when the next attempt is due),
``reason`` and ``error`` (once given up: why, and the last error, which names a webhook by id and host only) and
``at`` (its last change). States::

    (none) --begin--> sending --end--> delivered
                         |      --end--> waiting --begin (when due)--> sending ...
                         |      --end--> gave_up   (refused | uncertain | expired)
                         +--begin, lease over--> gave_up (uncertain)

``begin`` claims the next attempt, atomically (``WATCH``/``MULTI``): of several copies of one message exactly
one gets to send; a copy that comes early (the attempt is not due, or another copy is sending) is told how long
to wait, and a copy of a finished delivery is told so. ``end`` records an attempt's outcome only while the
attempt still holds its claim.

What a crash leaves, and what happens then (a worker "dies" = killed, or silent past the broker's heartbeat):

- died before ``begin``, or after ``end`` wrote ``waiting`` but before the retry was queued: the message was not
  acknowledged, so the broker hands it to another worker, whose ``begin`` goes on from the record.
- died after the retry was queued but before the message was acknowledged: two copies run; ``begin`` lets one
  send and tells the other to wait, then that it is finished.
- died between ``begin`` and the attempt's answer (or the attempt was interrupted, or Redis failed before
  ``end``): whether the message arrived is unknown. The record stays ``sending``; once its lease is over the next
  copy to look gives the delivery up as ``uncertain`` instead of sending it again: never twice, and the give-up
  is logged, counted and alerted on, so nobody is left thinking it arrived.
- the record expires a day after the delivery's last possible attempt, long after any copy of its message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.client

from quota.replies import text
from worker import keys
from worker.notifications.model import Notification

__all__ = ["FINISHED", "KEEP_AFTER_S", "Claim", "DeliveryLedger", "decide"]

T = TypeVar("T")

# How long a record outlives its delivery's last possible attempt: any copy of its message runs well before.
KEEP_AFTER_S = 24 * 3600.0
FINISHED = frozenset({"delivered", "gave_up"})


@dataclass(frozen=True)
class Claim:
    """What ``begin`` decided: ``send`` attempt number ``attempt``; ``wait`` ``wait_s`` seconds and look again;
    the delivery is ``finished`` (``state``: delivered or gave_up); or it ``gave_up`` now (``reason``)."""

    action: str
    attempt: int = 0
    wait_s: float = 0.0
    state: str = ""
    reason: str = ""


def decide(record: dict[str, str], now: float, deadline: float) -> Claim:
    """What a copy of the delivery's message does now, given its ``record`` (empty if there is none yet)."""
    state = record.get("state")
    try:
        if state in FINISHED:
            return Claim("finished", state=str(state))
        if state == "sending":
            until = float(record["until"])
            # Past its lease the attempt's worker is gone: it may have sent, so nobody may send again.
            return Claim("wait", wait_s=until - now) if now < until else Claim("gave_up", reason="uncertain")
        if state == "waiting" and now < (next_at := float(record["next_at"])):
            return Claim("wait", wait_s=next_at - now)
        if state not in (None, "waiting"):
            raise ValueError(state)
        attempts = int(record.get("attempts", "0"))
    except (KeyError, ValueError):
        # Not a record we wrote: whether anything was sent is unknown, so nothing is.
        return Claim("gave_up", reason="uncertain")
    if now > deadline:
        return Claim("gave_up", reason="expired")
    return Claim("send", attempt=attempts + 1)


class DeliveryLedger:
    """The record of ``notification``'s delivery to ``target``: ``begin`` claims an attempt, ``end`` records it.

    ``deadline`` (epoch seconds) is when the last attempt may start; ``lease_s`` how long an attempt may take
    before another copy may take it for dead. Times are passed in, so a test's clock decides.
    """

    def __init__(self, client: redis.Redis, notification: Notification, target: str, *, deadline: float,
                 lease_s: float) -> None:
        self.key = keys.delivery(notification.tenant, notification.id, target)
        self._redis = client
        self._deadline = deadline
        self._lease_s = lease_s

    def begin(self, now: float) -> Claim:
        """Decide what a copy of the message does now (see ``decide``) and record it: a claimed attempt becomes
        ``sending`` until ``now`` plus the lease; a delivery given up here becomes ``gave_up``."""
        def claim(pipe: redis.client.Pipeline, record: dict[str, str]) -> Claim:
            decided = decide(record, now, self._deadline)
            pipe.multi()
            if decided.action == "send":
                self._write(pipe, now, state="sending", attempts=decided.attempt, until=now + self._lease_s)
                pipe.hdel(self.key, "next_at")
            elif decided.action == "gave_up":
                self._write(pipe, now, state="gave_up", reason=decided.reason)
            return decided

        return self._atomically(claim)

    def end(self, attempt: int, now: float, state: str, *, next_at: float | None = None, reason: str = "",
            error: str = "") -> bool:
        """Record how attempt number ``attempt`` ended: ``delivered``, ``waiting`` (for ``next_at``) or
        ``gave_up`` (``reason``). False, and nothing written, if the attempt no longer holds its claim."""
        def record(pipe: redis.client.Pipeline, current: dict[str, str]) -> bool:
            held = current.get("state") == "sending" and current.get("attempts") == str(attempt)
            pipe.multi()
            if held:
                fields: dict[str, Any] = {"state": state, "reason": reason, "error": error}
                if next_at is not None:
                    fields["next_at"] = next_at
                self._write(pipe, now, **fields)
                pipe.hdel(self.key, "until")
            return held

        return self._atomically(record)

    def _atomically(self, step: Callable[[redis.client.Pipeline, dict[str, str]], T]) -> T:
        """Run ``step`` on the record as read under ``WATCH``; it queues its writes after ``multi()``. Runs again
        if the record changed before they were applied."""
        # transaction=True: redis.Redis's default, and on a Redis Cluster the one kind of pipeline that may
        # WATCH (the key is one slot).
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.key)  # type: ignore[no-untyped-call]  # redis-py leaves watch() untyped
                    result = step(pipe, _fields(pipe.hgetall(self.key)))
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _write(self, pipe: redis.client.Pipeline, now: float, **fields: Any) -> None:
        pipe.hset(self.key, mapping={**fields, "at": now})
        pipe.expire(self.key, math.ceil(max(self._deadline - now, 0.0) + self._lease_s + KEEP_AFTER_S))


def _fields(raw: Any) -> dict[str, str]:
    return {text(k): text(v) for k, v in dict(raw).items()}
