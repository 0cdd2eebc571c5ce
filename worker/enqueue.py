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
from dataclasses import dataclass
from typing import Any, cast

import redis

from quota.replies import text
from quota.scripts import LuaScript
from quota.validation import validate_tenant
from worker import broker, keys
from worker.errors import InvalidTimeout
from worker.jobs.priority import DEFAULT_PRIORITY, Priority, check_priority, message_kwargs
from worker.jobs.push import check_records, store_records
from worker.jobs.state import JOB_TTL_S, TERMINAL, JobRecord, JobStore
from worker.salesforce.soql import canonical_object, check_name, object_key
from worker.scheduling import pipeline

__all__ = [
    "MAX_WAIT_S",
    "PULL_ACTOR",
    "PUSH_ACTOR",
    "QUEUE",
    "SETTLED",
    "PullRequest",
    "Queued",
    "active_pull",
    "check_timeout",
    "enqueue_pull",
    "enqueue_pulls",
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

_RECORD = LuaScript("pull_record", package="worker")


@dataclass(frozen=True)
class PullRequest:
    """One pull for ``enqueue_pulls``: ``enqueue_pull``'s arguments."""

    tenant: str
    sobject: str
    priority: Priority = DEFAULT_PRIORITY
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Queued:
    """What serves a pull request: the id of its pull, and whether this call queued that pull (``new``)."""

    job_id: str
    new: bool


def _serves(running: str, wanted: Priority) -> bool:
    # Any pull serves a normal request; only an essential pull serves an essential one.
    return wanted in (DEFAULT_PRIORITY, running)


def active_pull(client: redis.Redis, tenant: str, sobject: str, priority: Priority = DEFAULT_PRIORITY) -> str | None:
    """The id of the tenant's pull of ``sobject`` (however spelled) that is queued, running or parked and serves
    ``priority``, if any: any pull serves a normal one, only an essential pull serves an essential one."""
    job_id = text(client.hget(keys.active_pulls(tenant), object_key(sobject)))
    if job_id is None:
        return None
    record = JobStore(client).get(tenant, job_id)
    if record is None or record.state in TERMINAL:
        return None
    return job_id if _serves(record.priority, priority) else None


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
    [outcome] = enqueue_pulls(client, [PullRequest(tenant, sobject, priority, tuple(fields))])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome.job_id


def _checked(request: PullRequest) -> PullRequest:
    validate_tenant(request.tenant)
    for name in request.fields:
        check_name(name, "field")
    return PullRequest(request.tenant, canonical_object(check_name(request.sobject, "object")),
                       check_priority(request.priority), tuple(request.fields))


def enqueue_pulls(client: pipeline.Client, requests: Sequence[PullRequest], *,
                  before_send: Callable[[], None] | None = None) -> list[Queued | Exception]:
    """Queue many pulls, each as ``enqueue_pull`` queues one, in five pipelined round trips whatever their number.

    Returns, per request and in order, a ``Queued`` or the exception that kept it from being queued (a Redis
    error fails only the requests of the tenant it hit; a broker error fails every new pull). Bad input raises
    an ``InvalidInput`` before anything is written. ``before_send`` runs once, after the reads and before any
    message is sent (the scheduler checks its lease there); what it raises stops the call with nothing
    recorded or sent.

    Each new pull's message is sent before its record is written (``worker/scripts/pull_record.lua``): a caller
    that dies in between leaves a pull that runs without a record, never a record of a pull that was never sent,
    which would stand as the object's active pull and keep every later pull of it out for a week.
    """
    batch = _PullBatch(client, [_checked(r) for r in requests])
    batch.find_active()
    batch.choose_new()
    batch.number()
    if before_send is not None:
        before_send()
    if batch.send():
        batch.record()
    return [o if o is not None else RuntimeError("not queued") for o in batch.outcomes]


def _group(indexes: Sequence[int], requests: Sequence[PullRequest]) -> dict[str, list[int]]:
    by_tenant: dict[str, list[int]] = {}
    for i in indexes:
        by_tenant.setdefault(requests[i].tenant, []).append(i)
    return by_tenant


class _PullBatch:
    """``enqueue_pulls``'s steps, each one pipeline; ``outcomes[i]`` is set once request ``i`` is settled."""

    def __init__(self, client: pipeline.Client, requests: list[PullRequest]) -> None:
        self.client = client
        self.requests = requests
        self.outcomes: list[Queued | Exception | None] = [None] * len(requests)
        self.active: dict[int, str] = {}  # request -> id of the pull its object has under way
        self.new: dict[int, str] = {}  # request -> id of the pull queued for it
        self.seq: dict[int, int] = {}

    def _fail(self, indexes: Sequence[int], error: Exception) -> None:
        for i in indexes:
            self.outcomes[i] = error

    def find_active(self) -> None:
        """Each object's active pull: one HMGET per tenant."""
        groups = _group(range(len(self.requests)), self.requests)
        commands = [("HMGET", keys.active_pulls(t), *[object_key(self.requests[i].sobject) for i in idx])
                    for t, idx in groups.items()]
        for indexes, reply in zip(groups.values(), pipeline.send(self.client, commands), strict=True):
            if isinstance(reply, Exception):
                self._fail(indexes, reply)
                continue
            self.active.update((i, text(job) or "") for i, job in zip(indexes, reply, strict=True) if job is not None)

    def choose_new(self) -> None:
        """Settle the requests an active pull serves (read: state and priority, one HMGET per pull); give the rest
        new job ids (one per object and priority, however often the batch asks for it)."""
        jobs = list(dict.fromkeys((self.requests[i].tenant, job) for i, job in self.active.items()))
        replies = pipeline.send(self.client, [("HMGET", keys.job(t, j), "state", "priority") for t, j in jobs])
        states = dict(zip(jobs, replies, strict=True))
        made: dict[tuple[str, str], tuple[str, Priority]] = {}  # (tenant, object key) -> a pull queued here
        for i, request in enumerate(self.requests):
            if self.outcomes[i] is not None:
                continue
            slot = (request.tenant, object_key(request.sobject))
            if slot in made:
                if _serves(made[slot][1], request.priority):
                    self.outcomes[i] = Queued(made[slot][0], False)
                    continue
            elif i in self.active:
                state = states[(request.tenant, self.active[i])]
                if isinstance(state, Exception):
                    self.outcomes[i] = state
                    continue
                if state[0] is not None and text(state[0]) not in TERMINAL \
                        and _serves(text(state[1]) or DEFAULT_PRIORITY, request.priority):
                    self.outcomes[i] = Queued(self.active[i], False)
                    continue
            self.new[i] = uuid.uuid4().hex
            made[slot] = (self.new[i], request.priority)

    def number(self) -> None:
        """Sequence numbers for the new pulls: one INCRBY per tenant."""
        groups = _group(list(self.new), self.requests)
        commands = [("INCRBY", keys.sequence(t), len(idx)) for t, idx in groups.items()]
        for indexes, top in zip(groups.values(), pipeline.send(self.client, commands), strict=True):
            if isinstance(top, Exception):
                self._fail(indexes, top)
                continue
            self.seq.update((i, int(top) - len(indexes) + 1 + n) for n, i in enumerate(indexes))

    def send(self) -> bool:
        """The new pulls' messages, in one batch; whether they were sent."""
        try:
            broker.send_many(QUEUE, [(PULL_ACTOR, self._message(i)) for i in self.seq])
        except Exception as exc:
            self._fail(list(self.seq), exc)
            return False
        return True

    def _message(self, i: int) -> dict[str, Any]:
        request = self.requests[i]
        return {"tenant": request.tenant, "sobject": request.sobject, "job_id": self.new[i],
                "fields": list(request.fields), "seq": self.seq[i], **message_kwargs(request.priority)}

    def record(self) -> None:
        """The sent pulls' records and active entries: one script per tenant (its keys share its slot)."""
        groups = _group(list(self.seq), self.requests)
        now = repr(time.time())
        commands = [_RECORD.command(
            [keys.active_pulls(t), *[keys.job(t, self.new[i]) for i in idx]],
            [now, JOB_TTL_S, *[arg for i in idx for arg in (object_key(self.requests[i].sobject), self.new[i],
                                                            self.requests[i].sobject, self.requests[i].priority)]])
            for t, idx in groups.items()]
        for indexes, reply in zip(groups.values(), pipeline.send(self.client, commands, [_RECORD]), strict=True):
            for i in indexes:
                self.outcomes[i] = reply if isinstance(reply, Exception) else Queued(self.new[i], True)


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
