"""Salesforce's rolling 24-hour allocations: the daily API request limit and the Bulk API budgets."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

__all__ = ["BULK_BATCHES", "BULK_QUERY_JOBS", "BULK_QUERY_STORAGE_KB", "WINDOW_SECONDS", "BulkBudgets",
           "UsageWindow"]

WINDOW_SECONDS = 24 * 3600
# Salesforce's defaults: 15,000 batches shared by Bulk API and Bulk API 2.0, 10,000 Bulk API 2.0 query jobs and
# 1 TB of query results, which its own error message counts as 1000000000 kb (/limits shows 976562 MB).
BULK_BATCHES = 15_000
BULK_QUERY_JOBS = 10_000
BULK_QUERY_STORAGE_KB = 1_000_000_000


class UsageWindow:
    """Amounts counted for one org in the last 24 hours, bucketed by second so memory stays small."""

    def __init__(self, max_requests: int, clock: Callable[[], float]) -> None:
        self.max = max_requests
        self._clock = clock
        self._buckets: deque[list[int]] = deque()
        self._total = 0

    def _prune(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] <= now - WINDOW_SECONDS:
            self._total -= self._buckets.popleft()[1]

    def add(self, amount: int = 1) -> int:
        """Count ``amount`` (one request by default) now and return the usage including it."""
        now = int(self._clock())
        self._prune(now)
        if self._buckets and self._buckets[-1][0] == now:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([now, amount])
        self._total += amount
        return self._total

    @property
    def used(self) -> int:
        """The amount counted in the last 24 hours."""
        self._prune(int(self._clock()))
        return self._total

    def set_used(self, used: int) -> None:
        """Pretend ``used`` was counted just now (it leaves the window 24 hours from now)."""
        self._buckets.clear()
        self._total = 0
        if used > 0:
            self._buckets.append([int(self._clock()), used])
            self._total = used


class BulkBudgets:
    """The Bulk API allocations of one org, each over its own rolling 24 hours."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.batches = UsageWindow(BULK_BATCHES, clock)
        self.query_jobs = UsageWindow(BULK_QUERY_JOBS, clock)
        self.query_storage_kb = UsageWindow(BULK_QUERY_STORAGE_KB, clock)

    def set_max(self, *, batches: int | None = None, query_jobs: int | None = None,
                query_storage_mb: int | None = None) -> None:
        """Change the maxima that are given (the query storage in MB, as /limits shows it)."""
        if any(v is not None and v < 0 for v in (batches, query_jobs, query_storage_mb)):
            raise ValueError("bulk limits must be >= 0")
        if batches is not None:
            self.batches.max = batches
        if query_jobs is not None:
            self.query_jobs.max = query_jobs
        if query_storage_mb is not None:
            self.query_storage_kb.max = query_storage_mb * 1024

    def storage_mb(self) -> tuple[int, int]:
        """``(used, max)`` query result storage in MB; any started MB counts as used."""
        window = self.query_storage_kb
        return math.ceil(window.used / 1024), window.max // 1024

    def usage(self) -> dict[str, dict[str, int]]:
        """``{budget: {"used", "max"}}`` for batches, query jobs and query storage (MB)."""
        used_mb, max_mb = self.storage_mb()
        return {"batches": {"used": self.batches.used, "max": self.batches.max},
                "query_jobs": {"used": self.query_jobs.used, "max": self.query_jobs.max},
                "query_storage_mb": {"used": used_mb, "max": max_mb}}

    def limits(self) -> dict[str, dict[str, int]]:
        """The three entries of ``/limits`` (``Max`` and ``Remaining``)."""
        usage = self.usage()
        names = {"batches": "DailyBulkApiBatches", "query_storage_mb": "DailyBulkV2QueryFileStorageMB",
                 "query_jobs": "DailyBulkV2QueryJobs"}
        return {name: {"Max": usage[key]["max"], "Remaining": max(usage[key]["max"] - usage[key]["used"], 0)}
                for key, name in names.items()}
