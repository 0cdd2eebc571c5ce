"""Paused tenants and their parked jobs, in Redis.

A tenant pauses when its credits run out, when its Salesforce org's own limit is near or reached, or when
its credentials fail. Its jobs then park: they wait in ``crmsync:{T}:parked`` in the order they were first
queued (scored by their enqueue sequence), not in worker memory and not as long broker delays, and they are
neither failures nor retries. ``worker.jobs.resume`` puts them back in the queue when the tenant may go on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from quota.replies import text
from worker import keys

__all__ = ["ParkedJob", "PauseReason", "PauseState", "PauseStore"]

PauseReason = Literal["quota_exhausted", "org_limit", "auth_failed"]


@dataclass(frozen=True)
class PauseState:
    """Why and since when a tenant is paused."""

    tenant: str
    reason: str
    since: float
    detail: str


@dataclass(frozen=True)
class ParkedJob:
    """A job waiting for its tenant to resume: the actor to send it to and its keyword arguments."""

    actor: str
    kwargs: dict[str, Any]

    @property
    def seq(self) -> int:
        """The job's place in its tenant's line (given at enqueue)."""
        return int(self.kwargs.get("seq", 0))

    def encode(self) -> str:
        """The stored form (stable, so parking the same job twice stores it once)."""
        return json.dumps({"actor": self.actor, "kwargs": self.kwargs}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> ParkedJob:
        """Read the stored form."""
        data = json.loads(raw)
        return cls(actor=str(data["actor"]), kwargs=dict(data["kwargs"]))



class PauseStore:
    """Reads and writes pause state and parked jobs."""

    def __init__(self, client: redis.Redis, clock: Any = time.time) -> None:
        self.redis = client
        self.clock = clock

    def park(self, tenant: str, job: ParkedJob, reason: PauseReason, detail: str) -> bool:
        """Park ``job`` and pause ``tenant`` (keeping the first reason if already paused).

        Returns whether this call paused the tenant. The tenant is added to the paused index before and
        after the write, so a resumer that tidies the index in between can never lose it.
        """
        self.redis.sadd(keys.PAUSED, tenant)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(keys.parked(tenant), {job.encode(): job.seq})
        pipe.hsetnx(keys.pause(tenant), "reason", reason)
        pipe.hsetnx(keys.pause(tenant), "since", repr(self.clock()))
        pipe.hsetnx(keys.pause(tenant), "detail", detail)
        newly = bool(pipe.execute()[1])
        self.redis.sadd(keys.PAUSED, tenant)
        return newly

    def pause(self, tenant: str, reason: PauseReason, detail: str) -> bool:
        """Pause ``tenant`` with nothing to park (yet); returns whether this call paused it."""
        self.redis.sadd(keys.PAUSED, tenant)
        newly = bool(self.redis.hsetnx(keys.pause(tenant), "reason", reason))
        if newly:
            self.redis.hset(keys.pause(tenant), mapping={"since": repr(self.clock()), "detail": detail})
        return newly

    def get(self, tenant: str) -> PauseState | None:
        """The tenant's pause, or ``None`` when it is running."""
        raw = cast(dict[Any, Any], self.redis.hgetall(keys.pause(tenant)))
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        try:
            since = float(data.get("since", "0"))
        except ValueError:
            since = 0.0
        return PauseState(tenant, data.get("reason", "unknown"), since, data.get("detail", ""))

    def paused_tenants(self) -> list[str]:
        """Tenants in the paused index (paused, or unpaused with parked jobs still to re-queue)."""
        return sorted(text(t) for t in cast(set[Any], self.redis.smembers(keys.PAUSED)))

    def parked_count(self, tenant: str) -> int:
        """How many jobs the tenant has parked."""
        return int(cast(int, self.redis.zcard(keys.parked(tenant))))

    def first_parked(self, tenant: str) -> tuple[str, ParkedJob] | None:
        """The oldest parked job and its stored form, or ``None``."""
        rows = cast(list[Any], self.redis.zrange(keys.parked(tenant), 0, 0))
        return (text(rows[0]), ParkedJob.decode(rows[0])) if rows else None

    def remove_parked(self, tenant: str, stored: str) -> None:
        """Drop a parked job once it is back in the queue."""
        self.redis.zrem(keys.parked(tenant), stored)

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
