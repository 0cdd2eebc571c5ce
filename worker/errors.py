"""Errors raised by the worker package.

::

    WorkerError
     ├── ConnectionRefused (quota.errors.InvalidInput)   refused ``connect`` input; nothing was written
     ├── NotConnected                                    the tenant has no (readable) connection
     ├── AuthFailed                                      no access token: the token endpoint refused, a secret
     │                                                   could not be read, or the endpoint could not be reached
     ├── OrgLimitExceeded                                Salesforce refused with 403 REQUEST_LIMIT_EXCEEDED for the
     │                                                   org's rolling 24-hour limit (never retried)
     ├── InvalidJob (quota.errors.InvalidInput)          a malformed job message: dead-lettered, never retried
     ├── JobBusy                                         another job holds the tenant's object: sent again later
     └── SliceEnded                                      a long job used its time slice: checkpointed, sent again

``ConnectionRefused`` is also an ``InvalidInput`` (a ``ValueError``), so the ``crmsync`` command prints its
one-line message and exits 2. No message ever carries a secret or a token: only references to where a
secret lives (``file:/path`` or ``env:NAME``).
"""

from __future__ import annotations

from quota.errors import InvalidInput

__all__ = [
    "AuthFailed",
    "ConnectionRefused",
    "InvalidJob",
    "JobBusy",
    "NotConnected",
    "OrgLimitExceeded",
    "SliceEnded",
    "WorkerError",
]


class WorkerError(Exception):
    """Base of every error the worker package raises."""


class ConnectionRefused(WorkerError, InvalidInput):
    """``connect`` input that is refused (bad URL, missing secret, sandbox after production...); nothing was written."""


class NotConnected(WorkerError):
    """The tenant has no connection, or its stored connection cannot be read."""

    def __init__(self, tenant: str, reason: str | None = None) -> None:
        self.tenant = tenant
        super().__init__(reason or f"tenant {tenant!r} is not connected to a Salesforce org: run `crmsync connect`")


class AuthFailed(WorkerError):
    """No access token could be had for the tenant.

    ``error`` is the token endpoint's ``error`` code (``invalid_client``, ``invalid_grant``...) or one of ours
    (``secret_unreadable``, ``network``, ``bad_response``); ``status`` is the HTTP status when there was one.
    """

    def __init__(self, tenant: str, message: str, *, error: str, status: int | None = None) -> None:
        self.tenant = tenant
        self.error = error
        self.status = status
        super().__init__(message)


class OrgLimitExceeded(WorkerError):
    """Salesforce refused a request: the org's own rolling 24-hour API limit is used up."""

    def __init__(self, tenant: str, detail: str) -> None:
        self.tenant = tenant
        super().__init__(f"Salesforce org of tenant {tenant!r} is over its daily API request limit: {detail}")


class InvalidJob(WorkerError, InvalidInput):
    """A job message whose arguments are malformed; it fails at once into the dead-letter queue."""


class JobBusy(WorkerError):
    """Another job is running for the same tenant and object; this one is sent again a little later."""


class SliceEnded(WorkerError):
    """A long job ran for its time slice (``CRMSYNC_JOB_SLICE_SECONDS``); its checkpoint is saved and it is sent
    again at once, so no job runs into Dramatiq's time limit, which would interrupt it anywhere."""
