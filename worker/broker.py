"""The Dramatiq broker on ``REDIS_URL``. Imported before any actor is declared, so actors bind to it.

``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT`` (seconds, default 60): how long a worker may be silent before the
messages it had taken are handed to another worker (a worker killed mid-job is noticed after this).
``CRMSYNC_BROKER_MAINTENANCE_CHANCE`` (per million broker calls, default 10,000): how often a call also
re-queues dead workers' messages. Dramatiq's default of 1,000 leaves them waiting minutes on an idle pool.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.middleware import CurrentMessage

from quota.settings import redis_url
from worker.dead_letters import CrmsyncRedisBroker

__all__ = ["NAMESPACE", "broker"]

# Under the crmsync: prefix like every other key of ours, so one Redis can be shared and audited by prefix.
NAMESPACE = "crmsync:broker"


def _positive(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a positive number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number")
    return value


broker = CrmsyncRedisBroker(  # type: ignore[no-untyped-call]
    url=redis_url(), namespace=NAMESPACE,
    heartbeat_timeout=int(_positive("CRMSYNC_BROKER_HEARTBEAT_TIMEOUT", 60) * 1000),
    maintenance_chance=int(min(_positive("CRMSYNC_BROKER_MAINTENANCE_CHANCE", 10_000), 1_000_000)),
)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
