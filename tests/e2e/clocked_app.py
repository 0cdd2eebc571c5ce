"""The worker app of the end-to-end tests that move time: ``worker.app`` unchanged, except that its credit bucket
(every take, and the resumer's checks) reads the time from ``tests.e2e.clock.SharedClock``, which the test moves.

Run as ``python -m dramatiq tests.e2e.clocked_app`` from the repository root. The product has no such switch: it
always meters on the Redis server's clock.
"""

from __future__ import annotations

import redis

from tests.e2e.clock import SharedClock
from worker.app import broker
from worker.jobs.runtime import use_bucket_clock
from worker.settings import redis_url

__all__ = ["broker"]

use_bucket_clock(SharedClock(redis.Redis.from_url(redis_url())))
