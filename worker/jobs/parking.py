"""Paused tenants and their parked jobs, in Redis.

A tenant pauses when its credits run out, when its Salesforce org's own limit is near or reached, or when
its credentials fail. Its jobs then park: they wait in Redis in the order they were first queued (scored by
their enqueue sequence), not in worker memory and not as long broker delays, and they are neither failures
nor retries. ``worker.jobs.resume`` puts them back in the queue when the tenant may go on.

A pause has a *scope*: ``normal`` when only normal jobs must wait (the credits left are the reserve kept for
essential jobs), ``all`` otherwise. Essential jobs go on through a pause of normal jobs. Parked normal jobs
wait in ``crmsync:{T}:parked`` and essential ones in ``crmsync:{T}:parked:essential``, so the resumer can send
the essential ones back alone without reading every parked job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from quota.replies import text
from quota.scripts import LuaScript
from worker import keys
from worker.jobs.priority import Priority, priority_of

__all__ = ["ParkedJob", "PauseReason", "PauseScope", "PauseState", "PauseStore"]

PauseReason = Literal["quota_exhausted", "org_limit", "auth_failed"]
PauseScope = Literal["normal", "all"]

_PARK = LuaScript("park", package="worker")
_NARROW = LuaScript("pause_narrow", package="worker")


@dataclass(frozen=True)
class PauseState:
    """Why and since when a tenant is paused, and which jobs must wait (``scope``)."""

    tenant: str
    reason: str
    since: float
    detail: str
    scope: PauseScope = "all"

    def holds(self, priority: Priority) -> bool:
        """Whether jobs of ``priority`` must wait: every job does, except essential ones in a pause of normal
        jobs only."""
        return not (priority == "essential" and self.scope == "normal")

    @classmethod
    def parse(cls, tenant: str, raw: dict[Any, Any]) -> PauseState | None:
        """The pause a ``crmsync:{T}:pause`` hash (as ``HGETALL`` answers it) holds; ``None`` when it is empty."""
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        try:
            since = float(data.get("since", "0"))
        except ValueError:
            since = 0.0
        # Anything but "normal" (pauses from before scopes, or written by hand) holds every job.
        scope: PauseScope = "normal" if data.get("scope") == "normal" else "all"
        return cls(tenant, data.get("reason", "unknown"), since, data.get("detail", ""), scope)


@dataclass(frozen=True)
class ParkedJob:
    """A job waiting for its tenant to resume: the actor to send it to and its keyword arguments."""

    actor: str
    kwargs: dict[str, Any]

    @property
    def seq(self) -> int:
        """The job's place in its tenant's line (given at enqueue)."""
        return int(self.kwargs.get("seq", 0))

    @property
    def priority(self) -> Priority:
        """The job's priority (``InvalidPriority`` for a malformed one: the actors refuse those before parking)."""
        return priority_of(self.kwargs)

    def encode(self) -> str:
        """The stored form (stable, so parking the same job twice stores it once)."""
        return json.dumps({"actor": self.actor, "kwargs": self.kwargs}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> ParkedJob:
        """Read the stored form."""
        data = json.loads(raw)
        return cls(actor=str(data["actor"]), kwargs=dict(data["kwargs"]))


def _parked_set(tenant: str, priority: Priority) -> str:
    return keys.parked_essential(tenant) if priority == "essential" else keys.parked(tenant)


class PauseStore:
    """Reads and writes pause state and parked jobs."""

    def __init__(self, client: redis.Redis, clock: Any = time.time) -> None:
        self.redis = client
        self.clock = clock

    def park(self, tenant: str, job: ParkedJob, reason: PauseReason, detail: str, scope: PauseScope = "all") -> bool:
        """Park ``job`` and pause ``tenant`` for ``reason``, holding the jobs ``scope`` says.

        A tenant already paused keeps its pause (the first reason), except that a pause of normal jobs only
        widens to all jobs, with this reason, when ``scope`` is ``all``. Returns whether this call paused the
        tenant. The tenant is added to the paused index before and after the write, so a resumer that tidies
        the index in between can never lose it.
        """
        self.redis.sadd(keys.PAUSED, tenant)
        outcome = _PARK(self.redis.execute_command, [keys.pause(tenant), _parked_set(tenant, job.priority)],
                        [job.encode(), job.seq, reason, repr(self.clock()), detail, scope])
        self.redis.sadd(keys.PAUSED, tenant)
        return int(outcome) == 1

    def pause(self, tenant: str, reason: PauseReason, detail: str) -> bool:
        """Pause all of ``tenant``'s jobs with nothing to park (yet); returns whether this call paused it."""
        self.redis.sadd(keys.PAUSED, tenant)
        newly = bool(self.redis.hsetnx(keys.pause(tenant), "reason", reason))
        if newly:
            self.redis.hset(keys.pause(tenant), mapping={"since": repr(self.clock()), "detail": detail})
        return newly

    def narrow(self, tenant: str, reason: str) -> bool:
        """Let essential jobs go on: the pause holds only normal jobs from now on, if it is still paused for
        ``reason``; returns whether it is."""
        return bool(_NARROW(self.redis.execute_command, [keys.pause(tenant)], [reason]))

    def get(self, tenant: str) -> PauseState | None:
        """The tenant's pause, or ``None`` when it is running."""
        return PauseState.parse(tenant, cast(dict[Any, Any], self.redis.hgetall(keys.pause(tenant))))

    def paused_tenants(self) -> list[str]:
        """Tenants in the paused index (paused, or unpaused with parked jobs still to re-queue)."""
        return sorted(text(t) for t in cast(set[Any], self.redis.smembers(keys.PAUSED)))

    def parked_count(self, tenant: str) -> int:
        """How many jobs the tenant has parked, essential and normal."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.parked(tenant))
        pipe.zcard(keys.parked_essential(tenant))
        return sum(int(n) for n in pipe.execute())

    def essential_count(self, tenant: str) -> int:
        """How many essential jobs the tenant has parked."""
        return int(cast(int, self.redis.zcard(keys.parked_essential(tenant))))

    def first_parked(self, tenant: str, *, essential_only: bool = False) -> tuple[str, ParkedJob] | None:
        """The oldest parked job (of all, or only of the essential ones) and its stored form, or ``None``."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(keys.parked_essential(tenant), 0, 0, withscores=True)
        if not essential_only:
            pipe.zrange(keys.parked(tenant), 0, 0, withscores=True)
        heads = [row for rows in pipe.execute() for row in cast(list[tuple[Any, float]], rows)]
        if not heads:
            return None
        stored = min(heads, key=lambda row: row[1])[0]
        return text(stored) or "", ParkedJob.decode(stored)

    def remove_parked(self, tenant: str, stored: str) -> None:
        """Drop a parked job once it is back in the queue."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(keys.parked(tenant), stored)
        pipe.zrem(keys.parked_essential(tenant), stored)
        pipe.execute()

    def unpause(self, tenant: str) -> PauseState | None:
        """End the tenant's pause (its parked jobs stay until re-queued); return the pause that ended."""
        state = self.get(tenant)
        self.redis.delete(keys.pause(tenant))
        return state

    def forget_if_idle(self, tenant: str) -> None:
        """Drop ``tenant`` from the paused index once it is unpaused and has nothing parked."""
        if self.get(tenant) is None and self.parked_count(tenant) == 0:
            self.redis.srem(keys.PAUSED, tenant)
            # Parking races with this: if a job parked in between, put the tenant back in the index.
            if self.parked_count(tenant) or self.get(tenant) is not None:
                self.redis.sadd(keys.PAUSED, tenant)
