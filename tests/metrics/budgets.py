"""Bulk API budgets put in Redis by the worker's own reader (``BulkBudgets``), from a ``/limits`` answer, so
the tests read exactly what a worker writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from worker.salesforce.bulk_budget import BulkBudgets
from worker.salesforce.client import TenantSalesforce


def limits(*, batches: int = 14_000, query_jobs: int = 9_990, query_storage_mb: int = 1_000_000) -> dict[str, Any]:
    """A ``/limits`` answer with the Bulk budgets left as given and Salesforce's default maxima."""
    return {
        "DailyBulkApiBatches": {"Max": 15_000, "Remaining": batches},
        "DailyBulkV2QueryJobs": {"Max": 10_000, "Remaining": query_jobs},
        "DailyBulkV2QueryFileStorageMB": {"Max": 1_048_576, "Remaining": query_storage_mb},
        "DailyApiRequests": {"Max": 15_000, "Remaining": 14_000},
    }


@dataclass
class _LimitsOrg:
    """The one call ``BulkBudgets`` makes to Salesforce: ``/limits``."""

    answer: dict[str, Any]

    def call(self, request: Callable[[Any], Any], *, what: str) -> Any:
        return request(self)

    def restful(self, path: str) -> dict[str, Any]:
        assert path == "limits/"
        return self.answer


@dataclass
class Notices:
    """A notifier that keeps what it is asked to raise: (kind, tenant, details)."""

    raised: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None:
        self.raised.append((kind, tenant, details))


def store_budgets(client: redis.Redis, tenant: str, answer: dict[str, Any], *, at: float) -> Notices:
    """Have ``BulkBudgets`` read ``answer`` as ``tenant``'s ``/limits`` at ``at`` and write it to Redis."""
    notices = Notices()
    budgets = BulkBudgets(client, tenant, notices, clock=lambda: at)
    budgets.allows_query(cast(TenantSalesforce, _LimitsOrg(answer)))
    return notices
