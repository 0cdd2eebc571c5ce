"""Slow channels (webhooks, email), delivered by a Dramatiq actor on its own queue so no job ever waits.

The actor, ``crmsync_deliver_notification`` on queue ``crmsync-notify``, is declared on a broker by
``declare_delivery_actor`` (the worker app does, so its processes consume the queue). ``notify`` sends one
message per channel, by actor name: ``{"notification": {...}, "target": "webhook:<ID>" | "email"}``.
The message names a webhook by id, never by URL, so no token sits in the broker or its dead-letter queue;
the actor looks the channel up when it runs (a channel removed meanwhile is skipped).

Each run of the message makes at most one attempt, claimed in the delivery ledger
(``worker.notifications.ledger``), which also says what a crash at any point leaves and why no delivery is ever
sent twice. An attempt that proves nothing arrived is retried by Dramatiq: the actor raises ``dramatiq.Retry``
with the delay of the retry policy (``worker.notifications.retry_policy``: 10 s doubling to 1 h, for 24 hours),
and the broker holds the message that long. A delivery ends delivered, or given up: refused by the endpoint,
``uncertain`` (it may have arrived: never sent again) or ``expired`` (its next attempt would start past the
bound). A given-up delivery is logged (``notification_delivery_given_up``) and counted
(``crmsync_notification_deliveries_given_up_total{channel, reason}``); each failed attempt that will be retried
is logged (``notification_delivery_retry``) and counted (``crmsync_notifications_total{outcome="retried"}``).
A malformed message is dead-lettered (``InvalidDelivery``); while Redis is down the message is retried by
Dramatiq's backoff; any other error is a bug, dead-lettered and logged by Dramatiq.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import dramatiq
import redis
import structlog

from quota.connection import connect
from worker.errors import DeliveryFailed, InvalidDelivery
from worker.metrics.instruments import DELIVERIES_GIVEN_UP, NOTIFICATIONS
from worker.notifications.channels import Channels, ChannelStore
from worker.notifications.ledger import DeliveryLedger
from worker.notifications.model import Notification
from worker.notifications.retry_policy import RetryPolicy
from worker.notifications.smtp import send_email
from worker.notifications.webhook import post_webhook
from worker.settings import redis_url

__all__ = [
    "ACTOR_NAME",
    "DEFAULT_POLICY",
    "EMAIL_TARGET",
    "GIVE_UP_REASONS",
    "LEASE_S",
    "QUEUE",
    "TIME_LIMIT_MS",
    "WEBHOOK_TARGET",
    "declare_delivery_actor",
    "deliver",
    "parse_message",
    "targets",
]

QUEUE = "crmsync-notify"
ACTOR_NAME = "crmsync_deliver_notification"
EMAIL_TARGET = "email"
WEBHOOK_TARGET = "webhook:"
# Dramatiq interrupts a run past this; every step of an attempt has its own shorter timeout.
TIME_LIMIT_MS = 120_000
# How long an attempt holds its claim: past it, its worker is taken for dead. Longer than the time limit.
LEASE_S = 300.0
# Why a delivery is given up: 24 hours of retries over, the endpoint refused it for good, or it may have arrived.
GIVE_UP_REASONS = ("expired", "refused", "uncertain")

Clock = Callable[[], float]
DEFAULT_POLICY = RetryPolicy()
# Why a copy of the message gives a delivery up before any attempt of its own (see ledger.decide).
_FOUND_GIVEN_UP = {
    "uncertain": "an attempt's outcome was never recorded: its worker stopped, or Redis failed, during it",
    "expired": "its next attempt came later than the bound: no worker ran it in time",
}


def targets(channels: Channels) -> list[str]:
    """One delivery target per configured slow channel."""
    found = [WEBHOOK_TARGET + hook.id for hook in channels.webhooks]
    return [*found, EMAIL_TARGET] if channels.email is not None else found


def _endpoint(channels: Channels, target: str) -> tuple[str, str, Callable[[Notification], None]] | None:
    """The target's metric channel name, how it is shown (a webhook by its host) and how to send to it; None if
    the channel is no longer configured."""
    if target == EMAIL_TARGET:
        email = channels.email
        return None if email is None else ("email", f"{email.host}:{email.port}", partial(send_email, email))
    hook = channels.webhook(target.removeprefix(WEBHOOK_TARGET))
    return None if hook is None else ("webhook", hook.host, partial(post_webhook, hook))


def deliver(client: redis.Redis, notification: Notification, target: str, *, policy: RetryPolicy = DEFAULT_POLICY,
            clock: Clock = time.time, lease_s: float = LEASE_S) -> float | None:
    """Run one copy of the delivery of ``notification`` to ``target``: make the next attempt if it is due and no
    other copy holds it. Returns the seconds after which this copy must run again (the next attempt, or another
    copy's attempt, is not over), or None when it is done with: delivered, given up, gone, or a repeat.

    Never raises for a failed delivery; raises ``redis.RedisError`` when the ledger cannot be read or written.
    """
    log = structlog.get_logger("crmsync.notify").bind(
        notification_id=notification.id, kind=notification.kind, tenant=notification.tenant, target=target)
    endpoint = _endpoint(ChannelStore(client).load(), target)
    if endpoint is None:
        log.info("notification_channel_gone")
        return None
    channel, host, send = endpoint
    log = log.bind(channel=channel, host=host)
    ledger = DeliveryLedger(client, notification, target, deadline=policy.deadline(notification.at),
                            lease_s=lease_s)
    claim = ledger.begin(clock())
    if claim.action == "wait":
        log.debug("notification_delivery_waiting", seconds=round(claim.wait_s, 3))
        return claim.wait_s
    if claim.action == "finished":
        log.debug("notification_delivery_repeat", state=claim.state)
        return None
    if claim.action == "gave_up":
        _given_up(log, channel, claim.reason, error=_FOUND_GIVEN_UP[claim.reason])
        return None
    try:
        send(notification)
    except DeliveryFailed as exc:
        return _failed(log, ledger, exc, notification=notification, channel=channel, attempt=claim.attempt,
                       policy=policy, clock=clock)
    except BaseException as exc:
        # Interrupted (time limit, shutdown) or a bug, somewhere in the attempt: it may have gone out.
        error = f"{type(exc).__name__} during the attempt"
        if ledger.end(claim.attempt, clock(), "gave_up", reason="uncertain", error=error):
            _given_up(log, channel, "uncertain", error=error, attempt=claim.attempt)
        raise
    if not ledger.end(claim.attempt, clock(), "delivered"):
        log.warning("notification_delivery_claim_lost", attempt=claim.attempt)  # delivered even so: counted
    NOTIFICATIONS.labels(kind=notification.kind, channel=channel, outcome="delivered").inc()
    log.info("notification_delivered", attempt=claim.attempt)
    return None


def _failed(log: Any, ledger: DeliveryLedger, exc: DeliveryFailed, *, notification: Notification, channel: str,
            attempt: int, policy: RetryPolicy, clock: Clock) -> float | None:
    """Record a failed attempt: given up, or the next one scheduled; the seconds until it, or None."""
    now = clock()
    error = str(exc)
    if exc.permanent or exc.uncertain:
        reason = "refused" if exc.permanent else "uncertain"
        if ledger.end(attempt, now, "gave_up", reason=reason, error=error):
            _given_up(log, channel, reason, error=error, attempt=attempt)
        return None
    next_at = now + policy.delay(attempt)
    if next_at > policy.deadline(notification.at):
        if ledger.end(attempt, now, "gave_up", reason="expired", error=error):
            _given_up(log, channel, "expired", error=error, attempt=attempt)
        return None
    if not ledger.end(attempt, now, "waiting", next_at=next_at, error=error):
        log.warning("notification_delivery_claim_lost", attempt=attempt, error=error)
        return None
    NOTIFICATIONS.labels(kind=notification.kind, channel=channel, outcome="retried").inc()
    log.warning("notification_delivery_retry", attempt=attempt, retry_in=round(next_at - now, 3), error=error)
    return next_at - now


def _given_up(log: Any, channel: str, reason: str, *, error: str, attempt: int | None = None) -> None:
    DELIVERIES_GIVEN_UP.labels(channel=channel, reason=reason).inc()
    log.error("notification_delivery_given_up", reason=reason, attempt=attempt, error=error)


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client  # noqa: PLW0603 (one connection pool per worker process, shared by its threads)
    if _client is None:
        # connect() gives a RedisCluster for a cluster URL: it serves the same one-slot commands.
        _client = cast(redis.Redis, connect(redis_url(), socket_connect_timeout=5.0, socket_timeout=5.0))
    return _client


def parse_message(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Notification, str]:
    """The notification and target of a delivery message; ``InvalidDelivery`` if it is malformed."""
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


def _retry_when(retries: int, error: BaseException) -> bool:
    # Retry: the delivery's own next look, with its delay. Redis down: waited out with Dramatiq's backoff (the
    # delivery's bound applies once it is back). Anything else is a bug: dead-lettered, logged by Dramatiq.
    return isinstance(error, dramatiq.Retry | redis.RedisError)


def declare_delivery_actor(broker: dramatiq.Broker, *, policy: RetryPolicy = DEFAULT_POLICY,
                           clock: Clock = time.time) -> dramatiq.Actor[..., None]:
    """Declare the delivery actor on ``broker`` as ``crmsync_deliver_notification``, once per broker, and return
    it. ``policy`` and ``clock`` decide when attempts are made (a test passes its own)."""
    # Every given-up series exists from the start, at 0: Prometheus sees no increase in a counter's first sample.
    for channel in ("webhook", EMAIL_TARGET):
        for reason in GIVE_UP_REASONS:
            DELIVERIES_GIVEN_UP.labels(channel=channel, reason=reason)

    def deliver_notification(*args: Any, **kwargs: Any) -> None:
        notification, target = parse_message(args, kwargs)
        wait_s = deliver(_redis(), notification, target, policy=policy, clock=clock)
        if wait_s is not None:
            raise dramatiq.Retry(f"delivery to {target}: next look in {wait_s:.0f}s",
                                 delay=max(1, math.ceil(wait_s * 1000)))

    actor: dramatiq.Actor[..., None] = dramatiq.actor(
        actor_name=ACTOR_NAME, queue_name=QUEUE, broker=broker, throws=(InvalidDelivery,), retry_when=_retry_when,
        min_backoff=5_000, max_backoff=60_000, time_limit=TIME_LIMIT_MS)(deliver_notification)
    return actor
