"""How a job run ends, and what each ending does: the job's state, its count, its notification.

``outcome_of`` picks the ``Outcome`` of a run that raised (``RULES``, tried in order); a run that returns is
``DONE``, and a job whose tenant is already paused is ``TENANT_PAUSED`` without running. The actors
(``worker.jobs.actors``) apply the outcome; nothing else decides what becomes of a job.

=========================  ========  ==============  ======================================================
the run                    state     counted as      notification; what else happens
=========================  ========  ==============  ======================================================
finished                   done      done
tenant already paused      parked    parked          (none: the tenant's first pause raised it)
``QuotaExhausted``         parked    parked          quota_exhausted (saying when only the reserve is left), or
                                                     config_invalid without a valid limit
``OrgLimitExceeded``       parked    parked          org_limit_exceeded
``AuthFailed``             parked    parked          auth_failed
``NotConnected``           stopped   stopped         config_invalid
``InvalidInput``           failed    failed          job_failed; ``InvalidJob`` to the dead-letter queue
``UnsafeRequest``          failed    failed          job_failed; not retried (a retry would be refused again,
                                                     each time for a credit)
``JobBusy``                queued                    sent again ``BUSY_DELAY_MS`` later
``SliceEnded``             queued                    sent again at once, behind the jobs queued meanwhile
any other error            retrying                  raised again: Dramatiq retries it
... on the last retry      failed    failed          job_failed; raised again: Dramatiq dead-letters it
=========================  ========  ==============  ======================================================

"counted as" is the ``outcome`` label of ``crmsync_jobs_total`` (``worker.metrics.jobs``); a parked job is
also added to its tenant's parked jobs, pausing the tenant for the row's reason unless it is paused already.
A pause holds every job, except when a normal job was refused because only the reserve is left
(``QuotaExhausted.reserve_only``): that pause holds normal jobs only and essential jobs go on with the reserve,
until an essential job is stopped too, which widens it to every job (``Outcome.pause_scope``).
Whatever a run raises, when Redis is unreachable (``redis_down``) the worker thread waits for Redis before
raising: Dramatiq needs it to queue the retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis

from quota.errors import InvalidInput, QuotaExhausted
from worker.errors import AuthFailed, JobBusy, NotConnected, OrgLimitExceeded, SliceEnded, UnsafeRequest
from worker.jobs.parking import PauseReason, PauseScope
from worker.jobs.priority import DEFAULT_PRIORITY, Priority
from worker.jobs.runtime import Runtime
from worker.jobs.state import JobState
from worker.notifications.notifier import (
    Notice,
    job_error,
    job_failed,
    no_valid_limit,
    quota_exhausted,
    tenant_paused,
)

__all__ = [
    "AUTH_FAILED",
    "BUSY",
    "BUSY_DELAY_MS",
    "DONE",
    "INVALID_INPUT",
    "NOT_CONNECTED",
    "ORG_LIMIT",
    "OUT_OF_CREDITS",
    "RETRIES_EXHAUSTED",
    "RETRYING",
    "RULES",
    "SLICE_ENDED",
    "TENANT_PAUSED",
    "Counted",
    "Ending",
    "Job",
    "Outcome",
    "outcome_of",
    "redis_down",
]

BUSY_DELAY_MS = 2_000

Counted = Literal["done", "parked", "stopped", "failed"]


@dataclass(frozen=True)
class Job:
    """A checked job message: the actor it was sent to, its kind (pull or push), its arguments and priority."""

    actor: str
    kind: str
    tenant: str
    sobject: str
    job_id: str
    kwargs: dict[str, Any]
    priority: Priority = DEFAULT_PRIORITY


@dataclass(frozen=True)
class Ending:
    """A run that ended on an error: what the outcome's notification is worded from."""

    runtime: Runtime
    job: Job
    outcome: Outcome
    error: Exception


@dataclass(frozen=True)
class Outcome:
    """What one way of ending does to the job (a row of the module's table)."""

    state: JobState
    # The job record's ``error`` (and a parked job's pause detail): ``str.format`` over ``error`` and ``error_type``.
    note: str = ""
    counted: Counted | None = None  # None: the job is not over (it is sent again or retried)
    pause: PauseReason | None = None  # park the job, pausing its tenant for this reason
    scope: PauseScope = "all"  # which jobs that pause holds (see pause_scope)
    notice: Callable[[Ending], Notice] | None = None  # only rows of runs that raised have one
    send_again: bool = False
    delay_ms: int | None = None  # before it is sent again; None: at once
    raises: Literal["retry", "dead_letter"] | None = None

    def describe(self, error: Exception | None) -> str:
        """The job record's note for this outcome of a run that ended on ``error``."""
        return self.note.format(error=error, error_type=type(error).__name__)

    def pause_scope(self, error: Exception | None) -> PauseScope:
        """Which jobs the pause holds: only normal ones when the run was refused because only the reserve is
        left (essential jobs go on with it), else the row's ``scope``."""
        if isinstance(error, QuotaExhausted) and error.reserve_only:
            return "normal"
        return self.scope


def _out_of_credits(end: Ending) -> Notice:
    tenant = end.job.tenant
    status = end.runtime.bucket.status(tenant)
    error = end.error if isinstance(end.error, QuotaExhausted) else None
    # No reset time means no valid limit: credits will not come back by themselves.
    if error is None or error.resets_at is None:
        return no_valid_limit(tenant, status)
    return quota_exhausted(tenant, status, error.resets_at, reserve_only=error.reserve_only)


def _paused(kind: str) -> Callable[[Ending], Notice]:
    def notice(end: Ending) -> Notice:
        pause = end.runtime.pauses.get(end.job.tenant)
        # One notification per pause: every job parked in it shares the pause's start as its window.
        window = repr(pause.since) if pause else end.job.job_id
        return tenant_paused(kind, end.job.tenant, reason=str(end.outcome.pause),
                             detail=end.outcome.describe(end.error), window=window)
    return notice


def _job_error(kind: str) -> Callable[[Ending], Notice]:
    def notice(end: Ending) -> Notice:
        return job_error(kind, end.job.tenant, end.job.job_id, end.error)
    return notice


def _failed_after_retries(end: Ending) -> Notice:
    return job_failed(end.job.tenant, end.job.job_id, job_kind=end.job.kind, sobject=end.job.sobject,
                      error=end.error)


DONE = Outcome("done", counted="done")
# Finding the tenant paused says nothing about essential jobs, so it never widens a pause of normal jobs.
TENANT_PAUSED = Outcome("parked", "tenant paused", counted="parked", pause="quota_exhausted", scope="normal")
OUT_OF_CREDITS = Outcome("parked", "{error}", counted="parked", pause="quota_exhausted", notice=_out_of_credits)
ORG_LIMIT = Outcome("parked", "{error}", counted="parked", pause="org_limit", notice=_paused("org_limit_exceeded"))
AUTH_FAILED = Outcome("parked", "{error}", counted="parked", pause="auth_failed", notice=_paused("auth_failed"))
NOT_CONNECTED = Outcome("stopped", "{error}", counted="stopped", notice=_job_error("config_invalid"))
INVALID_INPUT = Outcome("failed", "{error}", counted="failed", notice=_job_error("job_failed"), raises="dead_letter")
UNSAFE = Outcome("failed", "{error}", counted="failed", notice=_job_error("job_failed"))
# Waiting is not a failure: the job is sent again a little later instead of spending a Dramatiq retry.
BUSY = Outcome("queued", "waiting for another job on the same object", send_again=True, delay_ms=BUSY_DELAY_MS)
# Progress, not failure: the checkpoint is saved and the next slice starts from it.
SLICE_ENDED = Outcome("queued", "continuing in a new time slice: {error}", send_again=True)
# Transient faults past the in-request retries, Redis unavailable, bugs.
RETRYING = Outcome("retrying", "{error_type}: {error}", raises="retry")
RETRIES_EXHAUSTED = Outcome("failed", "{error_type}: {error}", counted="failed", notice=_failed_after_retries,
                            raises="retry")

RULES: tuple[tuple[type[Exception], Outcome], ...] = (
    (QuotaExhausted, OUT_OF_CREDITS),
    (OrgLimitExceeded, ORG_LIMIT),
    (AuthFailed, AUTH_FAILED),
    (NotConnected, NOT_CONNECTED),
    (InvalidInput, INVALID_INPUT),
    (UnsafeRequest, UNSAFE),
    (JobBusy, BUSY),
    (SliceEnded, SLICE_ENDED),
)


def outcome_of(error: Exception, *, last_try: bool) -> Outcome:
    """The outcome of a run that raised ``error``: the first of ``RULES`` it matches, else ``RETRYING``, or
    ``RETRIES_EXHAUSTED`` when ``last_try`` (Dramatiq has no retry left for it)."""
    for kind, outcome in RULES:
        if isinstance(error, kind):
            return outcome
    return RETRIES_EXHAUSTED if last_try else RETRYING


def redis_down(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is Redis being unreachable, or a Redis Cluster down (``CLUSTERDOWN``:
    a master failed and its replica has not taken over yet)."""
    while error is not None:
        if isinstance(error, redis.ConnectionError | redis.TimeoutError | redis.exceptions.ClusterDownError):
            return True
        error = error.__cause__ or error.__context__
    return False
