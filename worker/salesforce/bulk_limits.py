"""The org's Bulk API budgets as stored in Redis (``crmsync:{T}:bulk``): their names, how to write and read them.

Apart from ``bulk_budget`` (which reads them from Salesforce and acts on them) so that ``crmsync status`` and
the metrics endpoint read them without loading the Salesforce client or the worker's metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import redis

from quota.replies import text
from worker import keys

__all__ = ["BUDGETS", "Budget", "parse", "read", "write"]

#: Budget name (as in metrics and ``crmsync status``) -> its key in Salesforce's ``/limits``.
BUDGETS = {
    "batches": "DailyBulkApiBatches",
    "query_jobs": "DailyBulkV2QueryJobs",
    "query_storage_mb": "DailyBulkV2QueryFileStorageMB",
}
# A count Salesforce could report fits in 18 digits; more is a value written by hand.
_MAX_DIGITS = 18


@dataclass(frozen=True)
class Budget:
    """One budget as last read: what is left of its max."""

    remaining: int
    max: int


def _count(value: str | None) -> int | None:
    ok = value is not None and 0 < len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit()
    return int(cast(str, value)) if ok else None


def read(client: redis.Redis, tenant: str) -> tuple[dict[str, Budget], float | None]:
    """The budgets stored for ``tenant`` and when they were read (``None``: never, or not a time).

    A field that is not a whole number (a value written by hand) leaves that budget out; nothing raises but
    a Redis error (a key of the wrong type included).
    """
    return parse(cast(dict[Any, Any], client.hgetall(keys.bulk_budget(tenant))))


def parse(reply: dict[Any, Any]) -> tuple[dict[str, Budget], float | None]:
    """``read`` of an ``HGETALL`` reply already fetched (a pipeline's): the budgets and when they were read."""
    raw = {text(k): text(v) for k, v in reply.items()}
    budgets = {}
    for name in BUDGETS:
        remaining, maximum = _count(raw.get(f"{name}_remaining")), _count(raw.get(f"{name}_max"))
        if remaining is not None and maximum is not None:
            budgets[name] = Budget(remaining, maximum)
    try:
        at = float(raw.get("at") or "nan")
    except ValueError:
        at = math.nan
    return budgets, at if math.isfinite(at) and at >= 0 else None


def write(client: redis.Redis, tenant: str, budgets: dict[str, Budget], *, at: float | None = None) -> None:
    """Store ``budgets`` for ``tenant`` (others stay as they are), and ``at``, when they were read, if given."""
    mapping: dict[str, int | float] = {} if at is None else {"at": at}
    for name, budget in budgets.items():
        mapping[f"{name}_remaining"], mapping[f"{name}_max"] = budget.remaining, budget.max
    client.hset(keys.bulk_budget(tenant), mapping=mapping)
