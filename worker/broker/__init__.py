"""The Dramatiq broker: built from ``BrokerSettings`` and installed by the entry points, never at import.

``worker.app`` (what ``dramatiq worker.app`` and ``crmsync worker`` load) builds and installs it, then declares
the actors on it. A process that only sends messages (``worker.enqueue``, so the scheduler and the CLI) gets one
built from the environment on first use (``current``). Messages go to actors by name (``send``): a sender need
not import an actor's code; only the worker that runs the actor declares it.

Backends are submodules, as in Dramatiq's own layout, chosen by ``BROKER_URL``'s scheme (unset: ``REDIS_URL``):
``worker.broker.redis`` (``redis://``, ``rediss://``; keys under ``crmsync:broker``) and
``worker.broker.rabbitmq`` (``amqp://``, ``amqps://``). ``worker.broker.health`` checks the broker at start.
Queues are named alike on both: ``crmsync``, its delay queue ``crmsync.DQ`` and dead letters ``crmsync.XQ``
(on Redis, keys ``crmsync:broker:crmsync.XQ`` and ``.XQ.msgs``; on RabbitMQ, queues of those names).

``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT`` (seconds, default 60): how long a worker may be silent before the
messages it had taken are handed to another worker (a worker killed mid-job is noticed after this on Redis; on
RabbitMQ at once, as its connection drops, and a frozen one after about this long: the AMQP heartbeat).
``CRMSYNC_BROKER_MAINTENANCE_CHANCE`` (per million broker calls, default 10,000; Redis only): how often a call
also re-queues dead workers' messages. Dramatiq's default of 1,000 leaves them waiting minutes on an idle pool.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq
import dramatiq.errors
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from redis.exceptions import NoScriptError

from worker.broker.health import describe, describe_error, scrub
from worker.broker.rabbitmq import CrmsyncRabbitmqBroker
from worker.broker.redis import CrmsyncRedisBroker
from worker.errors import BrokerUnavailable
from worker.settings import BrokerSettings

__all__ = ["NAMESPACE", "build_broker", "current", "install", "send", "send_many"]

# Under the crmsync: prefix like every other key of ours, so one Redis can be shared and audited by prefix.
NAMESPACE = "crmsync:broker"

_installed: dramatiq.Broker | None = None
_building = threading.Lock()


def build_broker(settings: BrokerSettings | None = None) -> dramatiq.Broker:
    """A new broker on ``settings`` (by default read from the environment): RabbitMQ or Redis by the URL's
    scheme, with Dramatiq's ``CurrentMessage`` middleware, through which the actors read their message."""
    settings = settings or BrokerSettings.from_env()
    broker: dramatiq.Broker
    if settings.kind == "rabbitmq":
        broker = CrmsyncRabbitmqBroker(url=settings.url, heartbeat_s=settings.heartbeat_timeout_s)
    else:
        broker = CrmsyncRedisBroker(  # type: ignore[no-untyped-call]
            url=settings.url, namespace=NAMESPACE, heartbeat_timeout=int(settings.heartbeat_timeout_s * 1000),
            maintenance_chance=settings.maintenance_chance,
        )
    broker.add_middleware(CurrentMessage())
    setattr(broker, "crmsync_settings", settings)  # noqa: B010 (names it, password left out, when a send fails)
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
    broker = current()
    try:
        return broker.enqueue(message, delay=delay_ms)
    except dramatiq.errors.BrokerConnectionError as exc:  # RabbitMQ down after Dramatiq's retries
        raise _unavailable(broker, exc) from None


def _unavailable(broker: dramatiq.Broker, exc: Exception) -> BrokerUnavailable:
    settings = getattr(broker, "crmsync_settings", None)
    if not isinstance(settings, BrokerSettings):
        return BrokerUnavailable(f"message broker unavailable: {type(exc).__name__}")
    return BrokerUnavailable(scrub(f"{describe(settings)}: message not sent ({describe_error(exc)})", settings.url))


def send_many(queue_name: str, jobs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Send one message per ``(actor_name, kwargs)`` on ``queue_name``, at once: on a Redis broker in one
    pipeline, on RabbitMQ in transactions of 1,000, elsewhere one ``enqueue`` each. Raises if any was not sent
    (some may have been)."""
    broker = current()
    messages: list[dramatiq.Message[Any]] = [
        dramatiq.Message(queue_name=queue_name, actor_name=actor, args=(), kwargs=kwargs, options={})
        for actor, kwargs in jobs]
    if not isinstance(broker, RedisBroker) or "dispatch" not in getattr(broker, "scripts", {}):
        try:
            if isinstance(broker, CrmsyncRabbitmqBroker):
                broker.enqueue_many(messages)  # in transactions of 1,000
                return
            for message in messages:
                broker.enqueue(message)
        except dramatiq.errors.BrokerConnectionError as exc:  # RabbitMQ down after Dramatiq's retries
            raise _unavailable(broker, exc) from None
        return
    while messages:
        replies = _pipelined(broker, messages)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if any(not isinstance(error, NoScriptError) for error in errors):
            raise next(error for error in errors if not isinstance(error, NoScriptError))
        if errors:  # the broker's Redis lost its scripts (a restart): load, then send what failed again
            broker.client.script_load(broker.scripts["dispatch"].script)
        messages = [m for m, reply in zip(messages, replies, strict=True) if isinstance(reply, NoScriptError)]


def _pipelined(broker: RedisBroker, messages: list[dramatiq.Message[Any]]) -> list[Any]:
    # Dramatiq's own enqueue (ids, middleware, arguments) on a copy of the broker whose dispatch script call is
    # queued on a pipeline instead of sent: one round trip for the batch, nothing of Dramatiq's rewritten.
    dispatch = broker.scripts["dispatch"]
    pipe = broker.client.pipeline(transaction=False)
    batch = copy.copy(broker)
    batch.scripts = {**broker.scripts,
                     "dispatch": lambda keys, args: pipe.evalsha(dispatch.sha, len(keys), *keys, *args)}
    for message in messages:
        batch.enqueue(message)
    return list(pipe.execute(raise_on_error=False))
