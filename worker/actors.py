"""The Dramatiq actors: ``pull`` and ``push``, each idempotent and resumable.

Actors take keyword arguments only and check them before anything else: a malformed message raises
``InvalidJob``, which Dramatiq does not retry, so it goes straight to the dead-letter queue and never blocks
the queue. Quota, org-limit and auth stops end the job as ``stopped`` with a notification; transient faults
that outlast the in-request retries are retried by Dramatiq a few times, then end as ``failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from quota import keys
from quota.errors import InvalidInput, QuotaExhausted
from quota.validation import validate_tenant
from worker.broker import broker  # noqa: F401 (the broker must exist before actors are declared)
from worker.connections import Connection
from worker.errors import AuthFailed, InvalidJob, JobBusy, NotConnected, OrgLimitExceeded
from worker.pull import run_pull
from worker.push import run_push
from worker.runtime import Runtime, get_runtime
from worker.salesforce import TenantSalesforce
from worker.soql import check_name

__all__ = ["MAX_RETRIES", "QUEUE", "PullJob", "PushJob", "pull", "push"]

QUEUE = "crmsync"
MAX_RETRIES = 3
LOCK_TTL_S = 120
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
def _object_lock(runtime: Runtime, tenant: str, sobject: str) -> Iterator[Callable[[], None]]:
    # One job per tenant and object at a time; the lock expires if its worker dies, and each page extends it.
    lock = runtime.redis.lock(keys.lock(tenant, sobject), timeout=LOCK_TTL_S, blocking=False)
    if not lock.acquire():
        raise JobBusy(f"another job is running for {tenant}/{sobject}")
    try:
        yield lambda: lock.extend(LOCK_TTL_S, replace_ttl=True) and None
    finally:
        lock.release()


def _stop(runtime: Runtime, kind: str, tenant: str, job_id: str, error: Exception) -> None:
    runtime.jobs.set_state(tenant, job_id, "stopped", str(error))
    runtime.notifier.notify(kind, tenant, str(error), window=job_id, job_id=job_id)


def _execute(kind: str, tenant: str, sobject: str, job_id: str,
             body: Callable[[Runtime, TenantSalesforce, Connection, Callable[[], None]], object]) -> None:
    runtime = get_runtime()
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0) if message else 0
    structlog.contextvars.bind_contextvars(
        tenant=tenant, object=sobject, job_id=job_id, kind=kind, message_id=message.message_id if message else None
    )
    jobs = runtime.jobs
    try:
        jobs.set_state(tenant, job_id, "running")
        with _object_lock(runtime, tenant, sobject) as heartbeat:
            sf, connection = runtime.salesforce(tenant)
            try:
                outcome = body(runtime, sf, connection, heartbeat)
            finally:
                jobs.progress(tenant, job_id, credits=sf.session.charged - sf.session.refunded)
        jobs.set_state(tenant, job_id, "done")
        log.info("job_done", outcome=repr(outcome))
    except QuotaExhausted as exc:
        _stop(runtime, "quota_exhausted", tenant, job_id, exc)
    except OrgLimitExceeded as exc:
        _stop(runtime, "org_limit_exceeded", tenant, job_id, exc)
    except AuthFailed as exc:
        _stop(runtime, "auth_failed", tenant, job_id, exc)
    except NotConnected as exc:
        _stop(runtime, "config_invalid", tenant, job_id, exc)
    except InvalidInput as exc:
        jobs.set_state(tenant, job_id, "failed", str(exc))
        runtime.notifier.notify("job_failed", tenant, str(exc), window=job_id, job_id=job_id)
        raise InvalidJob(str(exc)) from exc
    except JobBusy:
        jobs.set_state(tenant, job_id, "queued", "waiting for another job on the same object")
        raise
    except Exception as exc:  # transient faults past the in-request retries, Redis unavailable, bugs
        final = retries >= MAX_RETRIES
        jobs.set_state(tenant, job_id, "failed" if final else "retrying", f"{type(exc).__name__}: {exc}")
        if final:
            runtime.notifier.notify("job_failed", tenant, f"{kind} {sobject} failed: {exc}", window=job_id,
                                    job_id=job_id)
        raise
    finally:
        structlog.contextvars.clear_contextvars()


def _retry_when(retries: int, error: Exception) -> bool:
    # Waiting for another job on the same object is not a fault: it does not use up retries.
    return isinstance(error, JobBusy) or retries < MAX_RETRIES


@dramatiq.actor(actor_name="crmsync_pull", queue_name=QUEUE, throws=(InvalidJob,), retry_when=_retry_when,
                min_backoff=1_000, max_backoff=60_000)
def pull(*args: Any, **kwargs: Any) -> None:
    """Pull one object for one tenant, from its checkpoint."""
    job = PullJob.parse(args, kwargs)
    _execute("pull", job.tenant, job.sobject, job.job_id, lambda rt, sf, conn, beat: run_pull(
        sf, client=rt.redis, sink=rt.sink, jobs=rt.jobs, job_id=job.job_id, heartbeat=beat,
        connection_id=conn.connection_id, sobject=job.sobject, fields=job.fields))


@dramatiq.actor(actor_name="crmsync_push", queue_name=QUEUE, throws=(InvalidJob,), retry_when=_retry_when,
                min_backoff=1_000, max_backoff=60_000)
def push(*args: Any, **kwargs: Any) -> None:
    """Upsert a push job's stored records, from its saved position."""
    job = PushJob.parse(args, kwargs)
    _execute("push", job.tenant, job.sobject, job.job_id, lambda rt, sf, conn, beat: run_push(
        sf, client=rt.redis, jobs=rt.jobs, job_id=job.job_id, sobject=job.sobject, external_id=job.external_id,
        heartbeat=beat))
