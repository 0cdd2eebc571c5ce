"""Errors raised by the worker package.

::

    WorkerError
     ├── ConnectionRefused (quota.errors.InvalidInput)  refused ``connect`` input; nothing was written
     ├── InvalidName (quota.errors.InvalidInput)        an object or field name outside Salesforce's naming rules
     ├── InvalidInterval (quota.errors.InvalidInput)    a schedule interval that is not a whole number of s/m/h/d
     ├── InvalidJob (quota.errors.InvalidInput)         a malformed job message: dead-lettered, never retried
     ├── InvalidDelivery (quota.errors.InvalidInput)    a malformed notification delivery: dead-lettered
     ├── InvalidPriority (quota.errors.InvalidInput)    a job priority other than ``essential`` or ``normal``
     ├── InvalidRecords (quota.errors.InvalidInput)     push records refused: not flat JSON objects of valid
     │                                                  fields and values, or over a size cap; nothing written
     ├── InvalidTimeout (quota.errors.InvalidInput)     a wait that is not a number of seconds from 0 to a week
     ├── CommandError                                   a ``crmsync`` command's one-line refusal; carries the exit code
     ├── BrokerUnavailable                              the message broker cannot be reached or refused our login
     ├── SecretUnavailable                              a referenced secret is missing, unreadable or empty
     ├── NotConnected                                   the tenant has no (readable) connection
     ├── AuthFailed                                     no access token: the token endpoint refused, a secret
     │                                                  could not be read, or the endpoint could not be reached
     ├── OrgLimitExceeded                               Salesforce refused with 403 REQUEST_LIMIT_EXCEEDED for the
     │                                                  org's rolling 24-hour limit (never retried)
     ├── DeliveryFailed                                 one webhook or email delivery attempt failed
     ├── BulkJobLost                                    a Bulk job that cannot go on (failed, aborted, gone):
     │                                                  recreated, or the job goes on by REST
     ├── UnsafeRequest                                  a Salesforce request not sent or followed: a URL off the
     │                                                  tenant's instance or outside Salesforce's shape, a redirect
     ├── JobBusy                                        another job holds the tenant's object: sent again later
     ├── SliceEnded                                     a long job used its time slice: checkpointed, sent again
     └── StartFailed (RuntimeError)                     a process of ``crmsync run`` exited or never became ready
          ├── RedisStartError                        a redis-server of ours (``worker.devstack.redis_server``)
          │                                          exited or was not ready in time; carries its log tail
          └── RabbitMQStartError                     a RabbitMQ node of ours (``worker.devstack.rabbitmq_server``)
                                                     exited or did not accept our login in time

The ``InvalidInput`` ones are ``ValueError`` s, so the ``crmsync`` command prints their one-line message and
exits 2. No message ever carries a secret or a token: only references to where a secret lives (``file:/path``
or ``env:NAME``), and webhooks by id and host.
"""

from __future__ import annotations

from quota.errors import InvalidInput

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "AuthFailed",
    "BrokerUnavailable",
    "BulkJobLost",
    "CommandError",
    "ConnectionRefused",
    "DeliveryFailed",
    "InvalidDelivery",
    "InvalidInterval",
    "InvalidJob",
    "InvalidName",
    "InvalidPriority",
    "InvalidRecords",
    "InvalidTimeout",
    "JobBusy",
    "NotConnected",
    "OrgLimitExceeded",
    "SecretUnavailable",
    "SliceEnded",
    "StartFailed",
    "UnsafeRequest",
    "WorkerError",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2


class WorkerError(Exception):
    """Base of every error the worker package raises."""


class ConnectionRefused(WorkerError, InvalidInput):
    """``connect`` input that is refused (bad URL, missing secret, sandbox after production...); nothing was written."""


class InvalidName(WorkerError, InvalidInput):
    """An sObject or field name that is not a valid Salesforce API name."""


class InvalidInterval(WorkerError, InvalidInput):
    """A schedule interval outside the allowed range or format."""


class InvalidJob(WorkerError, InvalidInput):
    """A job message whose arguments are malformed; it fails at once into the dead-letter queue."""


class InvalidDelivery(WorkerError, InvalidInput):
    """A delivery message that can never be delivered (bad shape): dead-lettered, not retried."""


class InvalidPriority(WorkerError, InvalidInput):
    """A job or schedule priority other than ``essential`` or ``normal``; nothing was written."""


class InvalidRecords(WorkerError, InvalidInput):
    """Records a push refuses (where from, and why, in one line: ``FILE:LINE: ...`` or ``record N: ...``);
    nothing was written."""


class InvalidTimeout(WorkerError, InvalidInput):
    """A time to wait for a job that is not a finite number of seconds from 0 to a week."""


class CommandError(WorkerError):
    """A command handler's clear, one-line refusal; ``exit_code`` is what the process exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BrokerUnavailable(WorkerError):
    """The Dramatiq broker (``BROKER_URL``, else ``REDIS_URL``) cannot be reached, refused our login, or lost a
    message being sent. The message names the broker by its URL with the password replaced by ``***``."""


class SecretUnavailable(WorkerError):
    """A referenced secret is missing, unreadable or empty. The message names the reference only."""


class NotConnected(WorkerError):
    """The tenant has no connection, or its stored connection cannot be read."""

    def __init__(self, tenant: str, reason: str | None = None) -> None:
        self.tenant = tenant
        super().__init__(reason or f"tenant {tenant!r} is not connected to a Salesforce org: run `crmsync connect`")


class AuthFailed(WorkerError):
    """No access token could be had for the tenant.

    ``error`` is the token endpoint's ``error`` code (``invalid_client``, ``invalid_grant``...) or one of ours
    (``secret_unreadable``, also for a reference outside the secret rules; ``login_url_refused``, a stored login
    URL that is not an allowed login host; ``network``, ``bad_response``); ``status`` is the HTTP status when there
    was one.
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


class DeliveryFailed(WorkerError):
    """One delivery attempt failed. Neither a ``permanent`` failure (a refused request) nor an ``uncertain`` one
    (the message went out but no answer came back, so it may have arrived) is retried: only a failure that
    proves nothing arrived is.

    The message never holds a secret: it names the channel (a webhook by id and host), never a URL or a password.
    """

    def __init__(self, message: str, *, permanent: bool = False, uncertain: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.uncertain = uncertain


class BulkJobLost(WorkerError):
    """A Bulk API job that cannot go on: it failed, was aborted, or Salesforce no longer knows it."""

    def __init__(self, job_id: str, state: str, detail: str = "") -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"Bulk job {job_id} is {state}" + (f": {detail}" if detail else ""))


class UnsafeRequest(WorkerError):
    """A Salesforce request the worker will not send or follow, as it could carry the tenant's bearer token off
    its instance: a URL read back from Redis or sent by Salesforce that is not in Salesforce's shape, a request
    to another host than the tenant's instance, or a redirect. Nothing was sent for it (a redirect's own
    request was, and stays charged)."""


class JobBusy(WorkerError):
    """Another job is running for the same tenant and object; this one is sent again a little later."""


class SliceEnded(WorkerError):
    """A long job ran for its time slice (``CRMSYNC_JOB_SLICE_SECONDS``); its checkpoint is saved and it is sent
    again at once, so no job runs into Dramatiq's time limit, which would interrupt it anywhere."""


class StartFailed(WorkerError, RuntimeError):
    """A child process exited or did not become ready; the message names it and its log file."""
