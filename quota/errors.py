"""Errors raised by the quota package.

::

    QuotaError
     ├── InvalidInput (ValueError)       bad input from a caller; nothing was written
     │    ├── InvalidLimit               not a whole number >= 100,000
     │    ├── InvalidTenant              tenant id outside the allowed character set
     │    └── InvalidResetTime           not HH:MM between 00:00 and 23:59
     ├── QuotaExhausted                  the bucket cannot pay for a request; carries ``resets_at``
     └── QuotaUnavailable                Redis could not be reached: no credit is granted (fail closed)
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "InvalidInput",
    "InvalidLimit",
    "InvalidResetTime",
    "InvalidTenant",
    "QuotaError",
    "QuotaExhausted",
    "QuotaUnavailable",
]


class QuotaError(Exception):
    """Base of every error the quota package raises."""


class InvalidInput(QuotaError, ValueError):
    """A caller passed a value that is refused; nothing was written."""


class InvalidLimit(InvalidInput):
    """A CRM API daily limit that is not a whole number >= 100,000."""


class InvalidTenant(InvalidInput):
    """A tenant id outside the documented character set."""


class InvalidResetTime(InvalidInput):
    """A reset time of day that is not ``HH:MM`` (UTC) between 00:00 and 23:59."""


class QuotaExhausted(QuotaError):
    """The tenant's bucket cannot pay for the request: no request may be sent before ``resets_at``."""

    def __init__(self, tenant: str, *, remaining: int, limit: int, resets_at: datetime | None) -> None:
        self.tenant = tenant
        self.remaining = remaining
        self.limit = limit
        self.resets_at = resets_at
        when = resets_at.isoformat() if resets_at else "never (no valid limit set)"
        super().__init__(
            f"tenant {tenant!r} has no API credits left (limit {limit}); credits return at {when}"
        )


class QuotaUnavailable(QuotaError):
    """Redis could not be reached or answered in error, so no credit was granted."""
