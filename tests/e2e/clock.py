"""One clock for the test process and its worker processes: epoch seconds kept in Redis, moved only by the test."""

from __future__ import annotations

from typing import cast

import redis

__all__ = ["KEY", "SharedClock"]

# Under crmsync's prefix, so the tests' own check that the database holds nothing else lets it be.
KEY = "crmsync:test:clock"


class SharedClock:
    """Reads the time from ``KEY`` on every call; ``set`` and ``advance`` move it for every process at once."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def __call__(self) -> float:
        return float(cast(bytes, self.redis.get(KEY)))

    def set(self, now: float) -> None:
        self.redis.set(KEY, repr(now))
