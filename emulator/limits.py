"""Salesforce's daily API request limit: a per-org count over a rolling 24-hour window."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["WINDOW_SECONDS", "UsageWindow"]

WINDOW_SECONDS = 24 * 3600


class UsageWindow:
    """Counted requests of one org in the last 24 hours, bucketed by second so memory stays small."""

    def __init__(self, max_requests: int, clock: Callable[[], float]) -> None:
        self.max = max_requests
        self._clock = clock
        self._buckets: deque[list[int]] = deque()
        self._total = 0

    def _prune(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] <= now - WINDOW_SECONDS:
            self._total -= self._buckets.popleft()[1]

    def add(self) -> int:
        """Count one request now and return the usage including it."""
        now = int(self._clock())
        self._prune(now)
        if self._buckets and self._buckets[-1][0] == now:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([now, 1])
        self._total += 1
        return self._total

    @property
    def used(self) -> int:
        """Requests counted in the last 24 hours."""
        self._prune(int(self._clock()))
        return self._total

    def set_used(self, used: int) -> None:
        """Pretend ``used`` requests were made just now (they leave the window 24 hours from now)."""
        self._buckets.clear()
        self._total = 0
        if used > 0:
            self._buckets.append([int(self._clock()), used])
            self._total = used
