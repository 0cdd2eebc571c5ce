"""The Dramatiq broker on ``REDIS_URL``. Imported before any actor is declared, so actors bind to it."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from quota.settings import redis_url

__all__ = ["NAMESPACE", "broker"]

# Under the crmsync: prefix like every other key of ours, so one Redis can be shared and audited by prefix.
NAMESPACE = "crmsync:broker"

broker = RedisBroker(url=redis_url(), namespace=NAMESPACE)  # type: ignore[no-untyped-call]
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
