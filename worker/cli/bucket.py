"""What ``crmsync quota``, ``status`` and ``resume`` share: the credit bucket on ``REDIS_URL`` and its status."""

from __future__ import annotations

from typing import Any

from quota.bucket import CreditBucket, Status
from worker.cli.support import redis_client

__all__ = ["connect_bucket", "status_dict"]


def connect_bucket() -> CreditBucket:
    """A bucket on ``REDIS_URL`` with timeouts, so an unreachable Redis fails fast instead of hanging."""
    return CreditBucket(redis_client())


def status_dict(status: Status) -> dict[str, Any]:
    """A tenant's quota status as plain JSON-able values."""
    percent = status.percent_used
    return {
        "tenant": status.tenant,
        "limit": status.limit,
        "limit_state": status.limit_state,
        "used": status.used,
        "remaining": status.remaining,
        "percent_used": None if percent is None else round(percent, 2),
        "resets_at": status.resets_at.isoformat(),
        "reset_at": status.reset_at,
        "window": status.window,
        "reserve": status.reserve,
        "available": status.available,
        "config_error": status.config_error,
    }
