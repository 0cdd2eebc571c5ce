"""Errors raised by the quota package.

::

    QuotaError
     ├── InvalidInput (ValueError)       bad input from a caller; nothing was written
     │    ├── InvalidLimit               not a whole number >= 100,000
     │    ├── InvalidTenant              tenant id outside the allowed character set
     │    ├── InvalidResetTime           not HH:MM between 00:00 and 23:59
     │    ├── InvalidWindow              a window mode other than ``daily`` or ``rolling``
     │    ├── InvalidReserve             not a whole number from 0 to below the limit
     │    └── RedisConfigError           ``REDIS_URL`` names a Redis that cannot be used as named
     │         ├── RedisUrlError         not a ``redis://``, ``rediss://``, ``unix://`` or ``redis[s]+cluster://``
     │         │                         URL crmsync can use
     │         └── RedisTopologyError    a cluster URL on a node not in cluster mode, a single-node URL on a
     │                                   cluster node, or a cluster with slots unserved or a state not ``ok``
     ├── QuotaExhausted                  the bucket cannot pay for a request; carries ``resets_at`` and
     │                                   whether only the reserve (kept for essential work) is left
     └── QuotaUnavailable                Redis could not be reached: no credit is granted (fail closed)
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "InvalidInput",
    "InvalidLimit",
    "InvalidReserve",
    "InvalidResetTime",
    "InvalidTenant",
    "InvalidWindow",
    "QuotaError",
    "QuotaExhausted",
    "QuotaUnavailable",
    "RedisConfigError",
    "RedisTopologyError",
    "RedisUrlError",
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


class InvalidWindow(InvalidInput):
    """A window mode other than ``daily`` or ``rolling``."""


class InvalidReserve(InvalidInput):
    """A reserve that is not a whole number from 0 to below the tenant's limit."""


class RedisConfigError(InvalidInput):
    """``REDIS_URL`` names a Redis that crmsync cannot use as named: refused at start (exit 2), never run
    without metering. The message redacts the URL's password."""


class RedisUrlError(RedisConfigError):
    """``REDIS_URL`` is not a URL of a form crmsync can use."""


class RedisTopologyError(RedisConfigError):
    """The Redis behind ``REDIS_URL`` is not what the URL names: a cluster URL on a node not in cluster mode, a
    single-node URL on a cluster node, or a cluster with hash slots unserved or a state that is not ``ok``."""


class QuotaExhausted(QuotaError):
    """The tenant's bucket cannot pay for the request: no request may be sent before ``resets_at``.

    ``reserve_only``: credits are left, but only the reserve, which is kept for essential work.
    """

    def __init__(self, tenant: str, *, remaining: int, limit: int, resets_at: datetime | None,
                 reserve: int = 0) -> None:
        self.tenant = tenant
        self.remaining = remaining
        self.limit = limit
        self.resets_at = resets_at
        self.reserve = reserve
        when = resets_at.isoformat() if resets_at else "never (no valid limit set)"
        if self.reserve_only:
            what = (f"only its reserve of {reserve:,} credits is left ({remaining:,} remaining of {limit:,}), "
                    "kept for essential jobs")
        else:
            what = f"has no API credits left (limit {limit})"
        super().__init__(f"tenant {tenant!r} {what}; credits return at {when}")

    @property
    def reserve_only(self) -> bool:
        """Credits are left, but only the reserve kept for essential work."""
        return self.remaining > 0


class QuotaUnavailable(QuotaError):
    """Redis could not be reached or answered in error, so no credit was granted."""
