"""Each job's state and outcome in Redis, so `--wait`, `crmsync status` and the scheduler can see it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from quota.replies import text
from worker import keys
from worker.salesforce.soql import object_key

__all__ = ["TERMINAL", "JobRecord", "JobState", "JobStore", "adopt_legacy_checkpoint"]

JobState = Literal["queued", "running", "retrying", "parked", "done", "failed", "stopped"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "stopped"})
JOB_TTL_S = 7 * 86_400
MAX_ERRORS_KEPT = 1_000


@dataclass(frozen=True)
class JobRecord:
    """What is known of one job."""

    job_id: str
    tenant: str
    kind: str
    sobject: str
    state: str
    credits: int = 0
    records: int = 0
    failed_records: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    updated_at: float = 0.0
    priority: str = "normal"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "job_id": self.job_id, "tenant": self.tenant, "kind": self.kind, "object": self.sobject,
            "state": self.state, "credits": self.credits, "records": self.records,
            "failed_records": self.failed_records, "errors": self.errors, "error": self.error,
            "updated_at": self.updated_at, "priority": self.priority,
        }


class JobStore:
    """Reads and writes job hashes (``crmsync:{T}:job:<id>``); each expires a week after its last change."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def _write(self, tenant: str, job_id: str, mapping: dict[str, Any], incr: dict[str, int] | None = None) -> None:
        key = keys.job(tenant, job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={**mapping, "updated_at": time.time()})
        for name, amount in (incr or {}).items():
            if amount:
                pipe.hincrby(key, name, amount)
        pipe.expire(key, JOB_TTL_S)
        pipe.execute()

    def create(self, tenant: str, job_id: str, kind: str, sobject: str, priority: str = "normal") -> None:
        """Record a newly queued job."""
        self._write(tenant, job_id, {"kind": kind, "object": sobject, "state": "queued", "credits": 0, "records": 0,
                                     "priority": priority})

    def set_state(self, tenant: str, job_id: str, state: JobState, error: str = "") -> None:
        """Move a job to ``state`` (with the error that caused it, if any).

        A pull that ends stops being the tenant's active pull of its object, so the next one may be queued.
        """
        self._write(tenant, job_id, {"state": state, "error": error})
        if state in TERMINAL:
            name = text(self.redis.hget(keys.job(tenant, job_id), "object"))
            if name is None:
                return
            # A pull queued before object names were matched is filed under the name as it was spelled.
            for field_name in dict.fromkeys((object_key(name), name)):
                if text(self.redis.hget(keys.active_pulls(tenant), field_name)) == job_id:
                    self.redis.hdel(keys.active_pulls(tenant), field_name)

    def progress(self, tenant: str, job_id: str, *, credits: int = 0, records: int = 0, failed: int = 0) -> None:
        """Add what a step of the job spent and delivered."""
        self._write(tenant, job_id, {}, {"credits": credits, "records": records, "failed_records": failed})

    def add_errors(self, tenant: str, job_id: str, errors: list[dict[str, Any]]) -> None:
        """Append per-record errors (a bounded number are kept; the count is always exact)."""
        if not errors:
            return
        current = self.get(tenant, job_id)
        kept = (current.errors if current else []) + errors
        self._write(tenant, job_id, {"errors": json.dumps(kept[:MAX_ERRORS_KEPT])})

    def get(self, tenant: str, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` if unknown or expired."""
        raw = cast(dict[bytes | str, bytes | str], self.redis.hgetall(keys.job(tenant, job_id)))
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        try:
            errors = json.loads(data.get("errors", "[]"))
        except ValueError:
            errors = []
        return JobRecord(
            job_id=job_id, tenant=tenant, kind=data.get("kind", ""), sobject=data.get("object", ""),
            state=data.get("state", ""), credits=int(data.get("credits", 0)), records=int(data.get("records", 0)),
            failed_records=int(data.get("failed_records", 0)), errors=errors if isinstance(errors, list) else [],
            error=data.get("error", ""), updated_at=float(data.get("updated_at", 0)),
            priority=data.get("priority", "normal"),
        )


def adopt_legacy_checkpoint(client: redis.Redis, tenant: str, sobject: str) -> None:
    """Move a pull checkpoint kept under the object as a job spelled it (before object names were matched,
    ``keys.legacy_pull_checkpoint``) to the object's one checkpoint (``keys.pull_checkpoint``), unless that one
    already exists: the pull then goes on from where it was instead of reading everything again.

    Idempotent and cheap (one read when there is nothing to move): call it under the object's lock, before
    reading the checkpoint. Where two spellings each had a checkpoint (the defect this fixes gave ``Lead`` and
    ``LEAD`` one each), the first adopted wins and the other is deleted when a job so spelled comes by: both
    are the same org's, and a pull from the older one only reads some records again.
    """
    legacy, current = keys.legacy_pull_checkpoint(tenant, sobject), keys.pull_checkpoint(tenant, sobject)
    if legacy == current:
        return
    state = text(client.hget(legacy, "state"))
    if state is None:
        return
    # HSETNX: a checkpoint the object already has (written by another job since) is never overwritten.
    client.hsetnx(current, "state", state)
    client.delete(legacy)
