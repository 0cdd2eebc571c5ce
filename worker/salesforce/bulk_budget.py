"""The org's Bulk API budgets, read from ``/limits`` (one metered request) and kept per tenant in Redis.

Salesforce counts Bulk work over a rolling 24 hours, apart from the daily request limit: ``DailyBulkApiBatches``
(15,000, shared with Bulk API 1.0; an ingest job takes one per 10,000 records), ``DailyBulkV2QueryJobs``
(10,000) and ``DailyBulkV2QueryFileStorageMB`` (1 TB of results). A job that would need a budget that is gone
goes by REST instead. The figures are re-read at most once per ``max_age`` (an hour) and only when a job is
about to choose Bulk, so the read costs a credit per tenant per hour at most; when Salesforce refuses a job
for a budget, the budget is marked spent at once and ``bulk_budget_exhausted`` is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import redis
import structlog

from worker.notifications.notifier import Notifier, bulk_budget_exhausted
from worker.salesforce.bulk_limits import BUDGETS, Budget, read, write
from worker.salesforce.client import TenantSalesforce

__all__ = ["BulkBudgets"]

log = structlog.get_logger("crmsync.bulk")


class BulkBudgets:
    """A tenant's Bulk budgets: whether a job may use Bulk, and what to do when Salesforce says it may not."""

    def __init__(self, client: redis.Redis, tenant: str, notifier: Notifier, *, max_age: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.tenant = tenant
        self.notifier = notifier
        self.max_age = max_age
        self.clock = clock

    def _current(self, sf: TenantSalesforce) -> dict[str, Budget]:
        budgets, at = read(self.redis, self.tenant)
        if at is not None and self.clock() - at < self.max_age and len(budgets) == len(BUDGETS):
            return budgets
        limits: Any = sf.call(lambda s: s.restful("limits/"), what="bulk_limits")
        fresh = {}
        for name, key in BUDGETS.items():
            entry = limits.get(key) if isinstance(limits, dict) else None
            figures = (entry.get("Remaining"), entry.get("Max")) if isinstance(entry, dict) else (None, None)
            if all(isinstance(v, int) for v in figures):
                fresh[name] = Budget(max(cast(int, figures[0]), 0), cast(int, figures[1]))
        write(self.redis, self.tenant, fresh, at=self.clock())
        for name, budget in fresh.items():
            if budget.remaining == 0:
                self._raise(name, budget.max, "Salesforce's /limits shows none left")
        return fresh

    def allows_query(self, sf: TenantSalesforce) -> bool:
        """Whether a query job may be created: query jobs and result storage left (a metered read when stale)."""
        budgets = self._current(sf)
        return all(budgets.get(name, Budget(0, 0)).remaining > 0 for name in ("query_jobs", "query_storage_mb"))

    def allows_ingest(self, sf: TenantSalesforce, batches: int) -> bool:
        """Whether an ingest job of ``batches`` batches (one per 10,000 records) fits what is left."""
        return self._current(sf).get("batches", Budget(0, 0)).remaining >= batches

    def spent(self, name: str, detail: str) -> None:
        """Salesforce refused Bulk work for budget ``name``: mark it spent (so jobs go by REST until the next
        read of ``/limits``) and raise ``bulk_budget_exhausted``."""
        budgets, _ = read(self.redis, self.tenant)
        maximum = budgets[name].max if name in budgets else 0
        write(self.redis, self.tenant, {name: Budget(0, maximum)})
        self._raise(name, maximum, detail)

    def _raise(self, name: str, maximum: int, detail: str) -> None:
        day = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")
        log.warning("bulk_budget_exhausted", tenant=self.tenant, budget=name, detail=detail[:200])
        bulk_budget_exhausted(self.tenant, budget=name, limit_name=BUDGETS[name], maximum=maximum,
                              detail=detail[:200], day=day).raise_on(self.notifier)
