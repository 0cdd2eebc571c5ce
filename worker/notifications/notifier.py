"""What the worker notifies: the ``Notifier`` it raises notifications through, and the wording of each one.

Every notification the worker raises on its own account is worded here, so a tenant's story (a warning, the
pause, the resume, a failed job) reads in one voice: ``worker.notifications.quota_warnings`` raises warnings as
credits are taken, ``worker.jobs.lifecycle`` raises the rest as jobs end and ``worker.jobs.resume`` as tenants
resume. Worker processes raise them through a ``NotificationCenter`` (``worker.notifications.center``), which
delivers each once to every channel; the kinds and their details are listed in ``worker.notifications.model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from quota.bucket import Grant, Status

__all__ = [
    "Notice",
    "Notifier",
    "bulk_budget_exhausted",
    "job_error",
    "job_failed",
    "no_valid_limit",
    "quota_exhausted",
    "quota_restored",
    "quota_warning",
    "tenant_paused",
]


class Notifier(Protocol):
    """Raises an error notification of ``kind`` for ``tenant``, at most once per ``window``.

    ``window`` names the episode the notification belongs to (a quota window's end, a pause's start, a job
    id): many workers hitting the same empty bucket raise one notification, not a storm.
    """

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None: ...


@dataclass(frozen=True)
class Notice:
    """A notification worded and ready to raise: ``Notifier.notify``'s arguments."""

    kind: str
    tenant: str
    message: str
    window: str
    details: dict[str, Any] = field(default_factory=dict)

    def raise_on(self, notifier: Notifier) -> None:
        """Raise this notification through ``notifier``."""
        notifier.notify(self.kind, self.tenant, self.message, window=self.window, **self.details)


def _set_limit(tenant: str) -> str:
    return f"crmsync quota set {tenant} LIMIT"


def quota_warning(tenant: str, grant: Grant, *, used: int, share: float, episode: str) -> Notice:
    """The tenant has used ``used`` credits, past ``share`` of its limit, in the window of ``grant``; it warns once
    per ``episode`` (``worker.notifications.quota_warnings.episode``)."""
    credits = "daily API credits" if grant.window == "daily" else "API credits of the last 24 hours"
    return Notice(
        "quota_warning", tenant,
        f"tenant {tenant} has used {used:,} of its {grant.limit:,} {credits}, past the {share:.0%} warning "
        f"share; credits return at {grant.resets_at.isoformat()}",
        window=f"{episode}:{share}",
        details={"used": used, "limit": grant.limit, "share": share, "resets_at": grant.resets_at.isoformat()},
    )


def quota_exhausted(tenant: str, status: Status, resets_at: datetime, *, reserve_only: bool = False) -> Notice:
    """The tenant's credits ran out; they return at ``resets_at``. With ``reserve_only``, what is left is the
    reserve kept for essential jobs: only normal jobs are paused, essential ones go on with it."""
    credits = "daily API credits" if status.window == "daily" else "API credits of the last 24 hours"
    back = (f"resume by themselves when credits return at {resets_at.isoformat()}, or as soon as the limit is "
            f"raised with `{_set_limit(tenant)}`")
    if reserve_only:
        message = (f"tenant {tenant} used its {credits} for normal jobs ({status.used:,} of {status.limit or 0:,}); "
                   f"the rest, {status.remaining:,}, is the reserve kept for essential jobs, which go on; its normal "
                   f"jobs are paused and {back}")
    else:
        spent = f"{credits}, its reserve for essential jobs included" if status.reserve else credits
        message = (f"tenant {tenant} used its {spent} ({status.used:,} of {status.limit or 0:,}); "
                   f"{'all its' if status.reserve else 'its'} jobs are paused and {back}")
    # The reserve running dry later in the same window is news of its own: essential jobs stop too.
    window = str(int(resets_at.timestamp()))
    return Notice(
        "quota_exhausted", tenant, message, window=f"reserve:{window}" if reserve_only else window,
        details={"used": status.used, "limit": status.limit, "resets_at": resets_at.isoformat(),
                 "raise_with": _set_limit(tenant), "reserve": status.reserve, "remaining": status.remaining,
                 "window_mode": status.window, "paused": "normal" if reserve_only else "all"},
    )


def no_valid_limit(tenant: str, status: Status) -> Notice:
    """The tenant's jobs are paused because it has no valid daily limit."""
    problem = status.config_error or "no limit is set"
    return Notice(
        "config_invalid", tenant,
        f"tenant {tenant} has no valid CRM API daily limit ({problem}); its jobs are paused until one is set "
        f"with `{_set_limit(tenant)}`",
        window=str(status.raw_limit), details={"limit_state": status.limit_state},
    )


def tenant_paused(kind: str, tenant: str, *, reason: str, detail: str, window: str) -> Notice:
    """The tenant's jobs are paused for ``reason`` (``org_limit_exceeded`` or ``auth_failed`` notifications)."""
    return Notice(kind, tenant, f"tenant {tenant} paused: {detail}", window=window, details={"reason": reason})


def quota_restored(tenant: str, status: Status, *, resumed: int, since: float) -> Notice:
    """The tenant's credits are back: the pause that began at epoch ``since`` ended, ``resumed`` jobs resumed."""
    return Notice(
        "quota_restored", tenant,
        f"tenant {tenant}: API credits are available again ({status.remaining:,} of {status.limit or 0:,}); "
        f"{resumed} parked jobs resumed",
        window=repr(since), details={"remaining": status.remaining, "limit": status.limit, "resumed_jobs": resumed,
                                    "reserve": status.reserve, "available": status.available},
    )


def bulk_budget_exhausted(tenant: str, *, budget: str, limit_name: str, maximum: int, detail: str,
                          day: str) -> Notice:
    """The org's Bulk API budget ``budget`` is used up: large jobs go by REST until it recovers."""
    return Notice("bulk_budget_exhausted", tenant,
                  f"tenant {tenant}: the org's Bulk API budget {limit_name} ({maximum:,} per rolling 24 hours) is "
                  f"used up ({detail}); large jobs go by REST, which costs more credits, until it recovers",
                  window=f"{budget}:{day}", details={"budget": budget, "max": maximum})


def job_error(kind: str, tenant: str, job_id: str, error: Exception) -> Notice:
    """A job that ended on ``error``, which says it all (``config_invalid`` or ``job_failed``)."""
    return Notice(kind, tenant, str(error), window=job_id, details={"job_id": job_id})


def job_failed(tenant: str, job_id: str, *, job_kind: str, sobject: str, error: Exception) -> Notice:
    """A job that failed on its last retry."""
    return Notice("job_failed", tenant, f"{job_kind} {sobject} failed after retries: {error}", window=job_id,
                  details={"job_id": job_id, "error": type(error).__name__})
