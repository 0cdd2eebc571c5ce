"""The Dramatiq actors: ``pull`` and ``push``, each idempotent and resumable.

Actors take keyword arguments only and check them before anything else: a malformed message raises
``InvalidJob``, which Dramatiq does not retry, so it goes straight to the dead-letter queue and never blocks
the queue. Quota, org-limit and auth stops end the job as ``stopped`` with a notification; transient faults
that outlast the in-request retries are retried by Dramatiq a few times, then end as ``failed``.
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

from quota.bucket import Status
from quota.errors import InvalidInput, QuotaExhausted
from quota.validation import validate_tenant
from worker import keys
from worker.broker import broker  # the broker must exist before actors are declared
from worker.errors import AuthFailed, InvalidJob, JobBusy, NotConnected, OrgLimitExceeded, SliceEnded
from worker.jobs.parking import ParkedJob, PauseReason
from worker.jobs.pull import run_pull
from worker.jobs.push import run_push
from worker.jobs.runtime import Runtime, get_runtime
from worker.metrics.instruments import JOBS
from worker.salesforce.client import TenantSalesforce
from worker.salesforce.connections import Connection
from worker.salesforce.soql import check_name

__all__ = ["MAX_RETRIES", "QUEUE", "PullJob", "PushJob", "pull", "push"]

QUEUE = "crmsync"
MAX_RETRIES = 3
LOCK_TTL_S = 30
BUSY_DELAY_MS = 2_000
log = structlog.get_logger("crmsync.worker")

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "Lead": ("FirstName", "LastName", "Company", "Email", "Status"),
    "Contact": ("FirstName", "LastName", "Email", "AccountId"),
    "Account": ("Name", "Industry"),
    "Opportunity": ("Name", "StageName", "Amount", "CloseDate"),
    "Campaign": ("Name", "Status"),
    "Case": ("Subject", "Status"),
}


_OPTIONAL = ("fields", "seq")


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
        return cls(data["tenant"], data["sobject"], data["job_id"], checked)


@dataclass(frozen=True)
class PushJob:
    """A push message's arguments."""

    tenant: str
    sobject: str
    external_id: str
    job_id: str

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
        return cls(data["tenant"], data["sobject"], data["external_id"], data["job_id"])


@contextmanager
def _object_lock(runtime: Runtime, tenant: str, sobject: str) -> Iterator[None]:
    """One job per tenant and object at a time. A keeper thread extends the lock while the job runs, so it
    can stay short: a job whose worker was killed frees its object within ``LOCK_TTL_S``."""
    lock = runtime.redis.lock(keys.lock(tenant, sobject), timeout=LOCK_TTL_S, blocking=False)
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


def _stop(runtime: Runtime, kind: str, tenant: str, job_id: str, error: Exception) -> None:
    runtime.jobs.set_state(tenant, job_id, "stopped", str(error))
    runtime.notifier.notify(kind, tenant, str(error), window=job_id, job_id=job_id)
    JOBS.labels(kind=kind, outcome="stopped").inc()


def _exhausted_message(tenant: str, error: QuotaExhausted, status: Status) -> str:
    when = error.resets_at.isoformat() if error.resets_at else "only once a valid limit is set"
    return (f"tenant {tenant} used its daily API credits ({status.used:,} of {status.limit or 0:,}); its jobs are "
            f"paused and resume by themselves when credits return at {when}, or as soon as the limit is raised "
            f"with `crmsync quota set {tenant} LIMIT`")


def _park(runtime: Runtime, job: Job, reason: PauseReason, error: Exception | None) -> None:
    """Park the job, pause the tenant (if not already) and raise the pause's notification once."""
    tenant, job_id = job.tenant, job.job_id
    detail = str(error) if error else "tenant paused"
    runtime.pauses.park(tenant, ParkedJob(job.actor, job.kwargs), reason, detail)
    runtime.jobs.set_state(tenant, job_id, "parked", detail)
    JOBS.labels(kind=job.kind, outcome="parked").inc()
    if isinstance(error, QuotaExhausted) and error.resets_at is None:
        status = runtime.bucket.status(tenant)
        problem = status.config_error or "no limit is set"
        runtime.notifier.notify(
            "config_invalid", tenant,
            f"tenant {tenant} has no valid CRM API daily limit ({problem}); its jobs are paused until one is set "
            f"with `crmsync quota set {tenant} LIMIT`", window=str(status.raw_limit), limit_state=status.limit_state,
        )
    elif isinstance(error, QuotaExhausted):
        status = runtime.bucket.status(tenant)
        window = str(int(error.resets_at.timestamp())) if error.resets_at else "unset"
        runtime.notifier.notify(
            "quota_exhausted", tenant, _exhausted_message(tenant, error, status), window=window,
            used=status.used, limit=status.limit, resets_at=error.resets_at.isoformat() if error.resets_at else None,
            raise_with=f"crmsync quota set {tenant} LIMIT",
        )
    elif error is not None:
        state = runtime.pauses.get(tenant)
        kind = "org_limit_exceeded" if reason == "org_limit" else "auth_failed"
        runtime.notifier.notify(kind, tenant, f"tenant {tenant} paused: {detail}",
                                window=repr(state.since) if state else job_id, reason=reason)
    log.info("job_parked", reason=reason)


@dataclass(frozen=True)
class Job:
    """What ``_execute`` needs of a parsed message."""

    actor: str
    kind: str
    tenant: str
    sobject: str
    job_id: str
    kwargs: dict[str, Any]


def _redis_down(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is Redis being unreachable."""
    while error is not None:
        if isinstance(error, redis.ConnectionError | redis.TimeoutError):
            return True
        error = error.__cause__ or error.__context__
    return False


def _await_redis(client: redis.Redis, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block this worker thread until Redis answers again, backing off up to 5 s between tries."""
    wait = 0.1
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            log.warning("waiting_for_redis", retry_in=wait)
            sleep(wait)
            wait = min(wait * 2, 5.0)


# What a job does, given the runtime, the tenant's client and connection, and whether its time slice is over.
JobBody = Callable[[Runtime, TenantSalesforce, Connection, Callable[[], bool]], object]


def _send_again(runtime: Runtime, job: Job, why: str, delay_ms: int | None = None) -> None:
    runtime.jobs.set_state(job.tenant, job.job_id, "queued", why)
    broker.get_actor(job.actor).send_with_options(kwargs=job.kwargs, delay=delay_ms)
    log.info("job_sent_again", why=why)


def _execute(job: Job, body: JobBody) -> None:
    try:
        _run(job, body)
    except Exception as exc:
        if _redis_down(exc):
            # Dramatiq needs Redis to queue the retry and to ack: raising now would ack a message whose retry
            # was never queued, and the job would be lost. Wait for Redis, then let Dramatiq retry the job.
            _await_redis(get_runtime().redis)
        raise


def _run(job: Job, body: JobBody) -> None:
    runtime = get_runtime()
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0) if message else 0
    tenant, job_id = job.tenant, job.job_id
    structlog.contextvars.bind_contextvars(tenant=tenant, object=job.sobject, job_id=job_id, kind=job.kind,
                                           message_id=message.message_id if message else None)
    jobs = runtime.jobs
    try:
        if runtime.pauses.get(tenant) is not None:
            _park(runtime, job, "quota_exhausted", None)  # the first pause's reason is kept
            return
        jobs.set_state(tenant, job_id, "running")
        slice_ends = time.monotonic() + runtime.settings.job_slice_seconds
        with _object_lock(runtime, tenant, job.sobject):
            sf, connection = runtime.salesforce(tenant, job.sobject)
            try:
                outcome = body(runtime, sf, connection, lambda: time.monotonic() >= slice_ends)
            finally:
                jobs.progress(tenant, job_id, credits=sf.session.charged - sf.session.refunded)
                sf.session.close()
        jobs.set_state(tenant, job_id, "done")
        JOBS.labels(kind=job.kind, outcome="done").inc()
        log.info("job_done", outcome=repr(outcome))
    except QuotaExhausted as exc:
        _park(runtime, job, "quota_exhausted", exc)
    except OrgLimitExceeded as exc:
        _park(runtime, job, "org_limit", exc)
    except AuthFailed as exc:
        _park(runtime, job, "auth_failed", exc)
    except NotConnected as exc:
        _stop(runtime, "config_invalid", tenant, job_id, exc)
    except InvalidInput as exc:
        jobs.set_state(tenant, job_id, "failed", str(exc))
        JOBS.labels(kind=job.kind, outcome="failed").inc()
        runtime.notifier.notify("job_failed", tenant, str(exc), window=job_id, job_id=job_id)
        raise InvalidJob(str(exc)) from exc
    except JobBusy:
        # Waiting is not a failure: send the job again a little later instead of spending a Dramatiq retry.
        _send_again(runtime, job, "waiting for another job on the same object", BUSY_DELAY_MS)
    except SliceEnded as exc:
        # Progress, not failure: the checkpoint is saved, the next slice starts from it (behind queued jobs).
        _send_again(runtime, job, f"continuing in a new time slice: {exc}")
    except Exception as exc:  # transient faults past the in-request retries, Redis unavailable, bugs
        final = retries >= MAX_RETRIES
        jobs.set_state(tenant, job_id, "failed" if final else "retrying", f"{type(exc).__name__}: {exc}")
        if final:
            JOBS.labels(kind=job.kind, outcome="failed").inc()
            runtime.notifier.notify("job_failed", tenant, f"{job.kind} {job.sobject} failed after retries: {exc}",
                                    window=job_id, job_id=job_id, error=type(exc).__name__)
        raise
    finally:
        structlog.contextvars.clear_contextvars()


@dramatiq.actor(actor_name="crmsync_pull", queue_name=QUEUE, throws=(InvalidJob,), max_retries=MAX_RETRIES,
                min_backoff=1_000, max_backoff=60_000)
def pull(*args: Any, **kwargs: Any) -> None:
    """Pull one object for one tenant, from its checkpoint."""
    job = PullJob.parse(args, kwargs)
    _execute(
        Job("crmsync_pull", "pull", job.tenant, job.sobject, job.job_id, kwargs),
        lambda rt, sf, conn, slice_over: run_pull(
            sf, client=rt.redis, sink=rt.sink, jobs=rt.jobs, job_id=job.job_id,
            connection_id=conn.connection_id, sobject=job.sobject, fields=job.fields, slice_over=slice_over),
    )


@dramatiq.actor(actor_name="crmsync_push", queue_name=QUEUE, throws=(InvalidJob,), max_retries=MAX_RETRIES,
                min_backoff=1_000, max_backoff=60_000)
def push(*args: Any, **kwargs: Any) -> None:
    """Upsert a push job's stored records, from its saved position."""
    job = PushJob.parse(args, kwargs)
    _execute(
        Job("crmsync_push", "push", job.tenant, job.sobject, job.job_id, kwargs),
        lambda rt, sf, conn, slice_over: run_push(
            sf, client=rt.redis, jobs=rt.jobs, job_id=job.job_id, sobject=job.sobject, external_id=job.external_id,
            slice_over=slice_over),
    )
