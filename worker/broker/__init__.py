"""The Dramatiq broker on ``REDIS_URL``. Imported before any actor is declared, so actors bind to it.

``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT`` (seconds, default 60): how long a worker may be silent before the
messages it had taken are handed to another worker (a worker killed mid-job is noticed after this).
``CRMSYNC_BROKER_MAINTENANCE_CHANCE`` (per million broker calls, default 10,000): how often a call also
re-queues dead workers' messages. Dramatiq's default of 1,000 leaves them waiting minutes on an idle pool.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from worker.broker.redis import CrmsyncRedisBroker
from worker.settings import positive_setting, redis_url

__all__ = ["NAMESPACE", "broker"]

# Under the crmsync: prefix like every other key of ours, so one Redis can be shared and audited by prefix.
NAMESPACE = "crmsync:broker"


broker = CrmsyncRedisBroker(  # type: ignore[no-untyped-call]
    url=redis_url(), namespace=NAMESPACE,
    heartbeat_timeout=int(positive_setting("CRMSYNC_BROKER_HEARTBEAT_TIMEOUT", 60) * 1000),
    maintenance_chance=int(min(positive_setting("CRMSYNC_BROKER_MAINTENANCE_CHANCE", 10_000), 1_000_000)),
)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
