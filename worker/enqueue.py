"""Queue jobs from code (the API the scheduler and the CLI use) and wait for their outcome.

A job is a message to the ``crmsync_pull`` or ``crmsync_push`` actor on the ``crmsync`` queue, sent by name
through this process's broker (``worker.broker.current``, built on first use): queueing a job needs neither the
job's code nor a worker in this process.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from quota.replies import text
from quota.validation import validate_tenant
from worker import broker, keys
from worker.errors import InvalidTimeout
from worker.jobs.priority import DEFAULT_PRIORITY, Priority, check_priority, message_kwargs
from worker.jobs.push import check_records, store_records
from worker.jobs.state import JOB_TTL_S, TERMINAL, JobRecord, JobStore
from worker.salesforce.soql import canonical_object, check_name, object_key

__all__ = [
    "MAX_WAIT_S",
    "PULL_ACTOR",
    "PUSH_ACTOR",
    "QUEUE",
    "SETTLED",
    "active_pull",
    "check_timeout",
    "enqueue_pull",
    "enqueue_push",
    "send_job",
    "wait_for",
]

QUEUE = "crmsync"
PULL_ACTOR = "crmsync_pull"
PUSH_ACTOR = "crmsync_push"

# A parked job may wait until the next reset: waiting callers are told about it rather than kept hanging.
SETTLED = TERMINAL | {"parked"}
# A job's record expires a week after its last change: waiting longer could never see it end.
MAX_WAIT_S = JOB_TTL_S


def active_pull(client: redis.Redis, tenant: str, sobject: str, priority: Priority = DEFAULT_PRIORITY) -> str | None:
    """The id of the tenant's pull of ``sobject`` (however spelled) that is queued, running or parked and serves
    ``priority``, if any: any pull serves a normal one, only an essential pull serves an essential one."""
    job_id = text(client.hget(keys.active_pulls(tenant), object_key(sobject)))
    if job_id is None:
        return None
    record = JobStore(client).get(tenant, job_id)
    if record is None or record.state in TERMINAL:
        return None
    return job_id if priority in (DEFAULT_PRIORITY, record.priority) else None


def enqueue_pull(client: redis.Redis, tenant: str, sobject: str, fields: Sequence[str] = (), *,
                 priority: Priority = DEFAULT_PRIORITY) -> str:
    """Queue an incremental pull of ``sobject`` for ``tenant`` at ``priority`` (``essential`` or ``normal``);
    return the job id. A bad priority raises ``InvalidPriority`` before anything is written.

    A pull brings an object up to date, so while one that serves ``priority`` is queued, running or parked for
    the same tenant and object, no second one is queued: its id is returned instead. An essential pull is
    queued even while a normal one is under way, since that one may be parked while only the reserve is left;
    the two take turns on the object's lock, each from the checkpoint the other left.

    Object names are matched without regard to case, as Salesforce matches them: ``LEAD`` is queued as
    ``Lead`` (``canonical_object``), and any two spellings of one object share its active pull, checkpoint and
    lock (``object_key``).
    """
    validate_tenant(tenant)
    sobject = canonical_object(check_name(sobject, "object"))
    for name in fields:
        check_name(name, "field")
    check_priority(priority)
    existing = active_pull(client, tenant, sobject, priority)
    if existing is not None:
        return existing
    job_id = uuid.uuid4().hex
    JobStore(client).create(tenant, job_id, "pull", sobject, priority)
    client.hset(keys.active_pulls(tenant), object_key(sobject), job_id)
    send_job(PULL_ACTOR, {"tenant": tenant, "sobject": sobject, "job_id": job_id, "fields": list(fields),
                          "seq": _next_seq(client, tenant), **message_kwargs(priority)})
    return job_id


def send_job(actor: str, kwargs: dict[str, Any], *, delay_ms: int | None = None) -> None:
    """Send a job message to ``actor`` (``PULL_ACTOR`` or ``PUSH_ACTOR``), after ``delay_ms`` if given: how jobs
    are queued, sent again and resumed. It records nothing: ``enqueue_pull`` and ``enqueue_push`` do that first."""
    broker.send(QUEUE, actor, kwargs, delay_ms=delay_ms)


def _next_seq(client: redis.Redis, tenant: str) -> int:
    # Parked jobs go back into the queue in this order.
    return int(cast(int, client.incr(keys.sequence(tenant))))


def enqueue_push(
    client: redis.Redis, tenant: str, sobject: str, records: list[dict[str, Any]], external_id: str, *,
    priority: Priority = DEFAULT_PRIORITY,
) -> str:
    """Queue an upsert of ``records`` into ``sobject`` (matched as ``enqueue_pull`` matches it) by ``external_id``
    at ``priority`` (``essential`` or ``normal``); return the job id.

    Bad input raises an ``InvalidInput`` before anything is written: ``InvalidRecords`` for records that are
    not flat objects of valid fields and finite JSON values with an external id, that name the reserved field
    ``attributes`` or one field twice, or that pass ``MAX_RECORD_BYTES`` a record or ``MAX_PUSH_BYTES`` a push
    (``worker.jobs.push``).
    """
    validate_tenant(tenant)
    sobject = canonical_object(check_name(sobject, "object"))
    check_name(external_id, "external id field")
    check_priority(priority)
    check_records(records, external_id)
    job_id = uuid.uuid4().hex
    store_records(client, tenant, job_id, records)
    JobStore(client).create(tenant, job_id, "push", sobject, priority)
    send_job(PUSH_ACTOR, {"tenant": tenant, "sobject": sobject, "external_id": external_id, "job_id": job_id,
                          "seq": _next_seq(client, tenant), **message_kwargs(priority)})
    return job_id


def wait_for(
    client: redis.Redis,
    tenant: str,
    job_id: str,
    *,
    timeout: float,
    until: frozenset[str] = SETTLED,
    poll: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobRecord | None:
    """Poll the job until its state is in ``until`` (by default: ended or parked) or ``timeout`` seconds
    pass; return its last known record. A ``timeout`` outside 0 to ``MAX_WAIT_S`` raises ``InvalidTimeout``."""
    jobs = JobStore(client)
    deadline = clock() + check_timeout(timeout)
    while True:
        record = jobs.get(tenant, job_id)
        if (record is not None and record.state in until) or clock() >= deadline:
            return record
        sleep(poll)


def check_timeout(seconds: float) -> float:
    """Return ``seconds`` if it is a time to wait for a job (0 to ``MAX_WAIT_S``), else raise ``InvalidTimeout``:
    NaN would make every deadline unreachable, and an infinite wait outlives the job's record."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
            or not 0 <= seconds <= MAX_WAIT_S:
        raise InvalidTimeout(f"a wait must be a number of seconds from 0 to {MAX_WAIT_S:,} (a week), got {seconds!r}")
    return float(seconds)
