"""Injected faults for one org: planned ones for the next N counted requests, and seeded random shares."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Literal, cast, get_args

__all__ = ["FAULT_KINDS", "FaultKind", "FaultPlan", "Faults"]

FaultKind = Literal["latency", "http500", "http503", "drop", "concurrent_limit"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@dataclass(frozen=True)
class FaultPlan:
    """What a counted request gets: a fault kind (None for a normal answer) and added seconds.

    ``latency`` answers normally, only later; every other kind replaces the answer.
    """

    kind: FaultKind | None = None
    delay: float = 0.0


class Faults:
    """Fault settings of one org; ``draw`` decides the fate of each counted request."""

    def __init__(self) -> None:
        self._queue: deque[FaultPlan] = deque()
        self.set_rates()

    def set_rates(self, *, latency: float = 0.0, error_rate: float = 0.0, error_status: int = 503,
                  drop_rate: float = 0.0, concurrent_limit_rate: float = 0.0, seed: int = 0) -> None:
        """Replace the random shares; each rate is a probability between 0 and 1."""
        rates = (error_rate, drop_rate, concurrent_limit_rate)
        if latency < 0 or any(not 0 <= r <= 1 for r in rates) or sum(rates) > 1:
            raise ValueError("latency must be >= 0 and rates between 0 and 1 with a sum <= 1")
        if error_status not in (500, 503):
            raise ValueError("error_status must be 500 or 503")
        self.latency = latency
        self._error: FaultKind = "http500" if error_status == 500 else "http503"
        self._rates = rates
        self._rng = random.Random(seed)

    def inject(self, kind: str, count: int = 1, latency: float = 0.0) -> None:
        """Give ``kind`` to the next ``count`` counted requests (after any injected earlier)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if count < 1 or latency < 0:
            raise ValueError("count must be >= 1 and latency >= 0")
        self._queue.extend([FaultPlan(cast(FaultKind, kind), latency)] * count)

    def clear(self) -> None:
        """No more faults: empty the queue and zero the shares."""
        self._queue.clear()
        self.set_rates()

    def draw(self) -> FaultPlan:
        """The fault for the counted request being served now."""
        if self._queue:
            planned = self._queue.popleft()
            return FaultPlan(planned.kind, planned.delay + self.latency)
        error, drop, concurrent = self._rates
        if not (error or drop or concurrent):
            return FaultPlan("latency", self.latency) if self.latency else _NONE
        roll = self._rng.random()
        kind: FaultKind | None = "latency" if self.latency else None
        if roll < drop:
            kind = "drop"
        elif roll < drop + error:
            kind = self._error
        elif roll < drop + error + concurrent:
            kind = "concurrent_limit"
        return FaultPlan(kind, self.latency)


_NONE = FaultPlan()
