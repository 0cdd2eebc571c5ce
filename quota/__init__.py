"""Daily API-credit quotas per tenant, kept in Redis: a daily or rolling 24-hour window, with a reserve for
essential work.

    from quota import CreditBucket, InvalidLimit
    bucket = CreditBucket.from_url("redis://127.0.0.1:6379/0")
    bucket.set_limit("acme", 150_000, actor="ops@example.com")
    grant = bucket.take("acme", 1)
"""

from quota.bucket import AuditEntry, Clock, CreditBucket, Grant, LimitState, Status, WindowMode
from quota.errors import (
    InvalidInput,
    InvalidLimit,
    InvalidReserve,
    InvalidResetTime,
    InvalidTenant,
    InvalidWindow,
    QuotaError,
    QuotaExhausted,
    QuotaUnavailable,
    RedisConfigError,
    RedisTopologyError,
    RedisUrlError,
)
from quota.validation import MAX_LIMIT, MIN_LIMIT

__all__ = [
    "MAX_LIMIT",
    "MIN_LIMIT",
    "AuditEntry",
    "Clock",
    "CreditBucket",
    "Grant",
    "InvalidInput",
    "InvalidLimit",
    "InvalidReserve",
    "InvalidResetTime",
    "InvalidTenant",
    "InvalidWindow",
    "LimitState",
    "QuotaError",
    "QuotaExhausted",
    "QuotaUnavailable",
    "RedisConfigError",
    "RedisTopologyError",
    "RedisUrlError",
    "Status",
    "WindowMode",
]
