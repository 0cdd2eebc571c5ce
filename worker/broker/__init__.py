"""The Dramatiq broker: built from ``BrokerSettings`` and installed by the entry points, never at import.

``worker.app`` (what ``dramatiq worker.app`` and ``crmsync worker`` load) builds and installs it, then declares
the actors on it. A process that only sends messages (``worker.enqueue``, so the scheduler and the CLI) gets one
built from the environment on first use (``current``). Messages go to actors by name (``send``): a sender need
not import an actor's code; only the worker that runs the actor declares it.

Backends are submodules, as in Dramatiq's own layout: ``worker.broker.redis``.

``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT`` (seconds, default 60): how long a worker may be silent before the
messages it had taken are handed to another worker (a worker killed mid-job is noticed after this).
``CRMSYNC_BROKER_MAINTENANCE_CHANCE`` (per million broker calls, default 10,000): how often a call also
re-queues dead workers' messages. Dramatiq's default of 1,000 leaves them waiting minutes on an idle pool.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from worker.broker.redis import CrmsyncRedisBroker
from worker.settings import BrokerSettings

__all__ = ["NAMESPACE", "build_broker", "current", "install", "send"]

# Under the crmsync: prefix like every other key of ours, so one Redis can be shared and audited by prefix.
NAMESPACE = "crmsync:broker"

_installed: dramatiq.Broker | None = None
_building = threading.Lock()


def build_broker(settings: BrokerSettings | None = None) -> dramatiq.Broker:
    """A new broker on ``settings`` (by default read from the environment), with Dramatiq's ``CurrentMessage``
    middleware, through which the actors read their message."""
    settings = settings or BrokerSettings.from_env()
    broker = CrmsyncRedisBroker(  # type: ignore[no-untyped-call]
        url=settings.url, namespace=NAMESPACE, heartbeat_timeout=int(settings.heartbeat_timeout_s * 1000),
        maintenance_chance=settings.maintenance_chance,
    )
    broker.add_middleware(CurrentMessage())
    return broker


def install(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make ``broker`` this process's broker (and Dramatiq's global one, which its CLI runs); return it."""
    global _installed  # noqa: PLW0603 (one broker per process, like Dramatiq's own global)
    _installed = broker
    dramatiq.set_broker(broker)
    return broker


def current() -> dramatiq.Broker:
    """This process's broker: the one installed, else one built from the environment and installed now."""
    with _building:
        return _installed if _installed is not None else install(build_broker())


def send(queue_name: str, actor_name: str, kwargs: dict[str, Any], *,
         delay_ms: int | None = None) -> dramatiq.Message[Any]:
    """Send ``actor_name`` a message with ``kwargs`` on ``queue_name`` (after ``delay_ms``, if given)."""
    message: dramatiq.Message[Any] = dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(),
                                                      kwargs=kwargs, options={})
    return current().enqueue(message, delay=delay_ms)
