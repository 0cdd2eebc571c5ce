"""Retry policy for Salesforce calls: small composable values, an injectable sleep.

Transient faults (connection errors, timeouts, 5xx, and the concurrency variant of REQUEST_LIMIT_EXCEEDED)
are retried with exponential backoff and jitter, a bounded number of times. Every attempt is a new request,
so every attempt is charged a credit, as Salesforce counts it. The daily variant of REQUEST_LIMIT_EXCEEDED is
never retried: waiting seconds cannot help, the tenant pauses instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import tenacity
from simple_salesforce.exceptions import SalesforceError

from worker.settings import WorkerSettings

__all__ = ["RetryPolicy", "is_concurrency_limit", "is_daily_org_limit", "is_transient", "salesforce_error_code"]


def salesforce_error_code(error: BaseException) -> tuple[str, str]:
    """``(errorCode, message)`` of the first error in a simple-salesforce exception's JSON body."""
    content: Any = getattr(error, "content", None)
    first = content[0] if isinstance(content, list) and content else content
    if isinstance(first, dict):
        return str(first.get("errorCode", "")), str(first.get("message", ""))
    return "", str(content or "")


def is_concurrency_limit(error: BaseException) -> bool:
    """403 REQUEST_LIMIT_EXCEEDED for too many long-running requests at once: passes in seconds."""
    code, message = salesforce_error_code(error)
    return getattr(error, "status", None) == 403 and code == "REQUEST_LIMIT_EXCEEDED" and "Concurrent" in message


def is_daily_org_limit(error: BaseException) -> bool:
    """403 REQUEST_LIMIT_EXCEEDED for the org's rolling 24-hour total: passes only as usage ages out."""
    code, _ = salesforce_error_code(error)
    return getattr(error, "status", None) == 403 and code == "REQUEST_LIMIT_EXCEEDED" and not is_concurrency_limit(
        error
    )


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request soon may succeed."""
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(error, SalesforceError):
        status = getattr(error, "status", 0) or 0
        return status >= 500 or is_concurrency_limit(error)
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient faults. ``sleep`` is injected in tests."""

    attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 20.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> RetryPolicy:
        """The policy set by ``CRMSYNC_RETRY_ATTEMPTS``, ``CRMSYNC_RETRY_INITIAL_WAIT`` and
        ``CRMSYNC_RETRY_MAX_WAIT`` (read and checked by ``worker.settings``)."""
        return cls(attempts=settings.retry_attempts, initial_wait=settings.retry_initial_wait,
                   max_wait=settings.retry_max_wait)

    def retrying(self, *, before_sleep: Callable[[tenacity.RetryCallState], None] | None = None) -> tenacity.Retrying:
        """A tenacity ``Retrying`` for this policy; the last error is re-raised when attempts run out."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential_jitter(multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter),
            retry=tenacity.retry_if_exception(is_transient),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
