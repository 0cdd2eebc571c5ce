"""The job actors, ``crmsync_pull`` and ``crmsync_push``: each idempotent and resumable.

They are declared on a broker by ``declare_actors``, which the worker app calls once it has installed the
broker; senders address them by name (``worker.enqueue``). They take keyword arguments only and check them
before anything else: a malformed message raises ``InvalidJob``, which Dramatiq does not retry, so it goes
straight to the dead-letter queue and never blocks the queue. What a run's ending does to its job is
``worker.jobs.lifecycle``'s table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.middleware import CurrentMessage

from quota.connection import RedisClient
from quota.errors import InvalidInput
from quota.validation import validate_tenant
from worker import keys
from worker.enqueue import PULL_ACTOR, PUSH_ACTOR, QUEUE, send_job
from worker.errors import InvalidJob, JobBusy
from worker.jobs import lifecycle
from worker.jobs.lifecycle import Ending, Job, Outcome
from worker.jobs.parking import ParkedJob
from worker.jobs.priority import DEFAULT_PRIORITY, Priority, priority_of
from worker.jobs.pull import run_pull
from worker.jobs.push import run_push
from worker.jobs.runtime import Runtime, get_runtime
from worker.metrics.jobs import record_outcome
from worker.salesforce.client import TenantSalesforce
from worker.salesforce.connections import Connection
from worker.salesforce.soql import check_name

__all__ = ["LOCK_TTL_S", "MAX_RETRIES", "PullJob", "PushJob", "declare_actors", "pull", "push"]

MAX_RETRIES = 3
LOCK_TTL_S = 30
log = structlog.get_logger("crmsync.worker")

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "Lead": ("FirstName", "LastName", "Company", "Email", "Status"),
    "Contact": ("FirstName", "LastName", "Email", "AccountId"),
    "Account": ("Name", "Industry"),
    "Opportunity": ("Name", "StageName", "Amount", "CloseDate"),
    "Campaign": ("Name", "Status"),
    "Case": ("Subject", "Status"),
}


_OPTIONAL = ("fields", "seq", "priority")


def _fields(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    unknown = set(kwargs) - set(names) - set(_OPTIONAL)
    if unknown:
        raise InvalidJob(f"unexpected job arguments: {sorted(unknown)}")
    missing = [n for n in names if n not in kwargs and n not in _OPTIONAL]
    if missing:
        raise InvalidJob(f"missing job arguments: {missing}")
    for name in names:
        if name not in _OPTIONAL and not isinstance(kwargs.get(name), str):
            raise InvalidJob(f"job argument {name} must be a string")
    seq = kwargs.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidJob("job argument seq must be a whole number")
    try:
        validate_tenant(kwargs["tenant"])
        check_name(kwargs["sobject"], "object")
        priority_of(kwargs)
    except InvalidInput as exc:
        raise InvalidJob(str(exc)) from exc
    return kwargs


@dataclass(frozen=True)
class PullJob:
    """A pull message's arguments."""

    tenant: str
    sobject: str
    job_id: str
    fields: tuple[str, ...] = ()
    priority: Priority = DEFAULT_PRIORITY

    @classmethod
    def parse(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PullJob:
        """Check a message's arguments, or raise ``InvalidJob``."""
        if args:
            raise InvalidJob("pull takes keyword arguments only")
        data = _fields(kwargs, ("tenant", "sobject", "job_id", "fields"))
        fields = data.get("fields") or DEFAULT_FIELDS.get(data["sobject"], ())
        if not isinstance(fields, list | tuple):
            raise InvalidJob("job argument fields must be a list of field names")
        try:
            checked = tuple(check_name(f, "field") for f in fields)
        except InvalidInput as exc:
            raise InvalidJob(str(exc)) from exc
        return cls(data["tenant"], data["sobject"], data["job_id"], checked, priority_of(data))


@dataclass(frozen=True)
class PushJob:
    """A push message's arguments."""

    tenant: str
    sobject: str
    external_id: str
    job_id: str
    priority: Priority = DEFAULT_PRIORITY

    @classmethod
    def parse(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PushJob:
        """Check a message's arguments, or raise ``InvalidJob``."""
        if args:
            raise InvalidJob("push takes keyword arguments only")
        data = _fields(kwargs, ("tenant", "sobject", "external_id", "job_id"))
        try:
            check_name(data["external_id"], "external id field")
        except InvalidInput as exc:
            raise InvalidJob(str(exc)) from exc
        return cls(data["tenant"], data["sobject"], data["external_id"], data["job_id"], priority_of(data))


@contextmanager
def _object_lock(runtime: Runtime, tenant: str, sobject: str) -> Iterator[None]:
    """One job per tenant and object at a time. A keeper thread extends the lock while the job runs, so it
    can stay short: a job whose worker was killed frees its object within ``LOCK_TTL_S``."""
    # Not thread-local: the keeper thread extends the token the job's thread acquired (with redis-py's default,
    # thread-local tokens, extend() in the keeper raised AttributeError and the lock lapsed mid-job).
    lock = runtime.redis.lock(keys.lock(tenant, sobject), timeout=LOCK_TTL_S, blocking=False, thread_local=False)
    if not lock.acquire():
        raise JobBusy(f"another job is running for {tenant}/{sobject}")
    done = threading.Event()

    def keep() -> None:
        while not done.wait(LOCK_TTL_S / 3):
            try:
                lock.extend(LOCK_TTL_S, replace_ttl=True)
            except redis.RedisError as exc:  # Redis away: the job itself will fail and be retried
                log.warning("lock_extend_failed", error=str(exc))

    keeper = threading.Thread(target=keep, name=f"lock-{tenant}-{sobject}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()
        try:
            lock.release()
        except redis.RedisError as exc:  # expired or Redis away: it frees itself within LOCK_TTL_S
            log.warning("lock_release_failed", error=str(exc))


def _await_redis(client: RedisClient, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block this worker thread until Redis answers again, backing off up to 5 s between tries. On a Redis
    Cluster, until every master of a fresh slot map answers: while a dead master's replica has not yet taken
    over, other nodes answer, and a retry then would fail again and spend one of the job's few retries."""
    wait = 0.1
    while True:
        try:
            if isinstance(client, redis.RedisCluster):
                client.nodes_manager.initialize()
                client.ping(target_nodes=redis.RedisCluster.PRIMARIES)
            else:
                client.ping()
            return
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            log.warning("waiting_for_redis", retry_in=wait)
            sleep(wait)
            wait = min(wait * 2, 5.0)


# What a job does, given the runtime, the tenant's client and connection, and whether its time slice is over.
JobBody = Callable[[Runtime, TenantSalesforce, Connection, Callable[[], bool]], object]


def _execute(job: Job, body: JobBody) -> None:
    try:
        _run(job, body)
    except Exception as exc:
        if lifecycle.redis_down(exc):
            # Dramatiq needs Redis to queue the retry and to ack: raising now would ack a message whose retry
            # was never queued, and the job would be lost. Wait for Redis, then let Dramatiq retry the job.
            _await_redis(get_runtime().redis)
        raise


def _run(job: Job, body: JobBody) -> None:
    runtime = get_runtime()
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0) if message else 0
    structlog.contextvars.bind_contextvars(tenant=job.tenant, object=job.sobject, job_id=job.job_id, kind=job.kind,
                                           message_id=message.message_id if message else None)
    try:
        result: object = None
        error: Exception | None = None
        known = runtime.jobs.get(job.tenant, job.job_id)
        if known is not None and known.state == "done":
            # Delivery is at least once (a worker killed after the job ended, before its ack, or taken for dead
            # while it ran): the job is over. Run again, a push would find its records gone and fail a done job.
            log.info("job_already_done")
            return
        try:
            pause = runtime.pauses.get(job.tenant)
            if pause is not None and pause.holds(job.priority):
                outcome = lifecycle.TENANT_PAUSED  # the first pause's reason is kept
            else:
                result = _attempt(runtime, job, body)
                outcome = lifecycle.DONE
        except Exception as exc:
            outcome, error = lifecycle.outcome_of(exc, last_try=retries >= MAX_RETRIES), exc
        _end(runtime, job, outcome, error, message)
        if outcome is lifecycle.DONE:
            log.info("job_done", outcome=repr(result))
    finally:
        structlog.contextvars.clear_contextvars()


def _attempt(runtime: Runtime, job: Job, body: JobBody) -> object:
    """Run the job's body under its object's lock, within its time slice; return what the body returned."""
    runtime.jobs.set_state(job.tenant, job.job_id, "running")
    slice_ends = time.monotonic() + runtime.settings.job_slice_seconds
    with _object_lock(runtime, job.tenant, job.sobject):
        sf, connection = runtime.salesforce(job.tenant, job.sobject, essential=job.priority == "essential")
        try:
            return body(runtime, sf, connection, lambda: time.monotonic() >= slice_ends)
        finally:
            runtime.jobs.progress(job.tenant, job.job_id, credits=sf.session.charged - sf.session.refunded)
            sf.session.close()


def _end(runtime: Runtime, job: Job, outcome: Outcome, error: Exception | None,
         message: dramatiq.Message[Any] | None) -> None:
    """Do what ``outcome`` says to the job (see ``worker.jobs.lifecycle``), raising as it says."""
    note = outcome.describe(error)
    if outcome.pause is not None:
        runtime.pauses.park(job.tenant, ParkedJob(job.actor, job.kwargs), outcome.pause, note,
                            outcome.pause_scope(error))
    runtime.jobs.set_state(job.tenant, job.job_id, outcome.state, note)
    if outcome.send_again:
        send_job(job.actor, job.kwargs, delay_ms=outcome.delay_ms)
        log.info("job_sent_again", why=note)
    if outcome.counted is not None and message is not None:
        record_outcome(message, job.kind, outcome.counted)
    if outcome.notice is not None and error is not None:
        outcome.notice(Ending(runtime, job, outcome, error)).raise_on(runtime.notifier)
    if outcome.pause is not None:
        log.info("job_parked", reason=outcome.pause)
    if error is not None and outcome.raises == "dead_letter":
        raise InvalidJob(str(error)) from error
    if error is not None and outcome.raises == "retry":
        raise error


_OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "throws": (InvalidJob,), "max_retries": MAX_RETRIES,
                            "min_backoff": 1_000, "max_backoff": 60_000}


def pull(*args: Any, **kwargs: Any) -> None:
    """Pull one object for one tenant, from its checkpoint."""
    job = PullJob.parse(args, kwargs)
    _execute(
        Job(PULL_ACTOR, "pull", job.tenant, job.sobject, job.job_id, kwargs, job.priority),
        lambda rt, sf, conn, slice_over: run_pull(
            sf, client=rt.redis, sink=rt.sink, jobs=rt.jobs, job_id=job.job_id,
            connection_id=conn.connection_id, sobject=job.sobject, fields=job.fields, slice_over=slice_over,
            bulk=rt.bulk_options(job.tenant)),
    )


def push(*args: Any, **kwargs: Any) -> None:
    """Upsert a push job's stored records, from its saved position."""
    job = PushJob.parse(args, kwargs)
    _execute(
        Job(PUSH_ACTOR, "push", job.tenant, job.sobject, job.job_id, kwargs, job.priority),
        lambda rt, sf, conn, slice_over: run_push(
            sf, client=rt.redis, jobs=rt.jobs, job_id=job.job_id, sobject=job.sobject, external_id=job.external_id,
            slice_over=slice_over, bulk=rt.bulk_options(job.tenant)),
    )


def declare_actors(broker: dramatiq.Broker) -> None:
    """Declare ``pull`` and ``push`` on ``broker`` as ``crmsync_pull`` and ``crmsync_push``, once per broker."""
    dramatiq.actor(actor_name=PULL_ACTOR, broker=broker, **_OPTIONS)(pull)
    dramatiq.actor(actor_name=PUSH_ACTOR, broker=broker, **_OPTIONS)(push)
