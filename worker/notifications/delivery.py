"""Slow channels (webhooks, email), delivered by a Dramatiq actor on its own queue so no job ever waits.

The actor, ``crmsync_deliver_notification`` on queue ``crmsync-notify``, is declared on a broker by
``declare_delivery_actor`` (the worker app does, so its processes consume the queue). ``notify`` sends one
message per channel, by actor name: ``{"notification": {...}, "target": "webhook:<ID>" | "email"}``.
The message names a webhook by id, never by URL, so no token sits in the broker or its dead-letter queue;
the actor looks the channel up when it runs (a channel removed meanwhile is skipped). Each delivery is tried
a bounded number of times with exponential backoff (tenacity); the outcome is counted and logged, and a failed
delivery ends the message normally: it is not an error for Dramatiq to retry or dead-letter. Only a malformed
message is dead-lettered (``InvalidDelivery``), and only a fault before any send (Redis down while reading the
channels) is retried by Dramatiq.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from worker.errors import DeliveryFailed, InvalidDelivery
from worker.metrics.instruments import NOTIFICATIONS
from worker.notifications.channels import Channels, ChannelStore
from worker.notifications.model import Notification
from worker.notifications.smtp import send_email
from worker.notifications.webhook import post_webhook
from worker.settings import redis_url

__all__ = [
    "ACTOR_NAME",
    "ATTEMPTS",
    "QUEUE",
    "declare_delivery_actor",
    "deliver",
    "deliver_notification",
    "targets",
]

QUEUE = "crmsync-notify"
ACTOR_NAME = "crmsync_deliver_notification"
ATTEMPTS = 4
EMAIL_TARGET = "email"
WEBHOOK_TARGET = "webhook:"


def targets(channels: Channels) -> list[str]:
    """One delivery target per configured slow channel."""
    found = [WEBHOOK_TARGET + hook.id for hook in channels.webhooks]
    return [*found, EMAIL_TARGET] if channels.email is not None else found


def _transient(error: BaseException) -> bool:
    return isinstance(error, DeliveryFailed) and not error.permanent


def _send_once(channels: Channels, notification: Notification, target: str) -> str | None:
    """Send to ``target``; return its metric channel name, or None if the channel is gone."""
    if target == EMAIL_TARGET:
        if channels.email is None:
            return None
        send_email(channels.email, notification)
        return "email"
    hook = channels.webhook(target.removeprefix(WEBHOOK_TARGET))
    if hook is None:
        return None
    post_webhook(hook, notification)
    return "webhook"


def deliver(client: redis.Redis, notification: Notification, target: str, *,
            attempts: int = ATTEMPTS, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Deliver ``notification`` to ``target``, retrying transient failures; True if it was delivered.

    Never raises for a failed delivery: the failure is counted (``outcome=failed``) and logged.
    """
    log = structlog.get_logger("crmsync.notify")
    channel = "email" if target == EMAIL_TARGET else "webhook"
    context = {"notification_id": notification.id, "kind": notification.kind, "tenant": notification.tenant,
               "target": target}

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info("notification_delivery_retry", attempt=state.attempt_number, error=str(error), **context)

    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=8.0),
                        retry=retry_if_exception(_transient), sleep=sleep, before_sleep=before_sleep, reraise=True)
    channels = ChannelStore(client).load()
    try:
        used = retrying(_send_once, channels, notification, target)
    except DeliveryFailed as exc:
        NOTIFICATIONS.labels(kind=notification.kind, channel=channel, outcome="failed").inc()
        log.warning("notification_delivery_failed", error=str(exc), permanent=exc.permanent, **context)
        return False
    if used is None:
        log.info("notification_channel_gone", **context)
        return False
    NOTIFICATIONS.labels(kind=notification.kind, channel=used, outcome="delivered").inc()
    log.info("notification_delivered", channel=used, **context)
    return True


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client  # noqa: PLW0603 (one connection pool per worker process, shared by its threads)
    if _client is None:
        _client = redis.Redis.from_url(redis_url(), socket_connect_timeout=5.0, socket_timeout=5.0)
    return _client


def _parse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Notification, str]:
    if args or set(kwargs) != {"notification", "target"}:
        raise InvalidDelivery("deliver_notification takes exactly the keyword arguments notification and target")
    target, data = kwargs["target"], kwargs["notification"]
    if not isinstance(target, str) or not (target == EMAIL_TARGET or target.startswith(WEBHOOK_TARGET)):
        raise InvalidDelivery(f"unknown delivery target {target!r}")
    if not isinstance(data, dict):
        raise InvalidDelivery("notification must be a JSON object")
    try:
        return Notification.from_json(data), target
    except ValueError as exc:
        raise InvalidDelivery(str(exc)) from None


def deliver_notification(*args: Any, **kwargs: Any) -> None:
    """Deliver one notification to one slow channel (see the module docstring for the message)."""
    notification, target = _parse(args, kwargs)
    deliver(_redis(), notification, target)


def declare_delivery_actor(broker: dramatiq.Broker) -> None:
    """Declare ``deliver_notification`` on ``broker`` as ``crmsync_deliver_notification``, once per broker."""
    dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE, broker=broker, throws=(InvalidDelivery,), max_retries=3,
                   min_backoff=5_000, max_backoff=60_000)(deliver_notification)
