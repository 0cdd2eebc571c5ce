"""The Dramatiq broker on ``REDIS_URL``. Imported before any actor is declared, so actors bind to it.

``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT`` (seconds, default 60): how long a worker may be silent before the
messages it had taken are handed to another worker (a worker killed mid-job is noticed after this).
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from quota.settings import redis_url

__all__ = ["NAMESPACE", "broker"]

# Under the crmsync: prefix like every other key of ours, so one Redis can be shared and audited by prefix.
NAMESPACE = "crmsync:broker"


def _heartbeat_timeout_ms() -> int:
    raw = os.environ.get("CRMSYNC_BROKER_HEARTBEAT_TIMEOUT", "60")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"CRMSYNC_BROKER_HEARTBEAT_TIMEOUT={raw!r}: expected seconds") from None
    if seconds <= 0:
        raise ValueError(f"CRMSYNC_BROKER_HEARTBEAT_TIMEOUT={raw!r}: expected a positive number of seconds")
    return int(seconds * 1000)


broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=redis_url(), namespace=NAMESPACE, heartbeat_timeout=_heartbeat_timeout_ms()
)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
