"""``NotificationCenter``: the worker's ``Notifier``, raising each notification once and delivering it.

``notify`` does only fast work inline: the once-per-(tenant, kind, window) check (one ``SET NX``), the log
line, the stream entry, and one broker message per slow channel. It never raises for a Redis or broker
fault: a notification problem is logged and counted, and never fails the job that raised it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import redis
import structlog

from quota.replies import text
from quota.validation import validate_tenant
from worker import broker, keys
from worker.metrics.instruments import NOTIFICATIONS
from worker.notifications.channels import ChannelStore
from worker.notifications.delivery import ACTOR_NAME, QUEUE, targets
from worker.notifications.model import KINDS, Notification, redact_text, scrub_details

__all__ = ["DEDUPE_TTL_S", "STREAM_MAXLEN", "NotificationCenter", "Send", "recent"]

# Longer than any window (a quota day, a pause, a job's retries), so a repeat is still recognised.
DEDUPE_TTL_S = 8 * 24 * 3600
STREAM_MAXLEN = 10_000
_MAX_WINDOW = 200
# Hands a notification to a slow channel: (notification as JSON, target) -> None. Default: the actor.
Send = Callable[[dict[str, Any], str], None]


def _send_with_actor(notification: dict[str, Any], target: str) -> None:
    broker.send(QUEUE, ACTOR_NAME, {"notification": notification, "target": target})


def _check_window(window: str) -> str:
    if not isinstance(window, str) or not window or len(window) > _MAX_WINDOW:
        raise ValueError(f"notification window must be a string of 1-{_MAX_WINDOW} characters")
    return window


class NotificationCenter:
    """Raises notifications once per (tenant, kind, window) to the log, the stream and the configured channels.

    ``send`` hands a notification to a slow channel (default: the ``crmsync_deliver_notification`` actor);
    ``clock`` gives epoch seconds for the ``at`` timestamp.
    """

    def __init__(self, client: redis.Redis, *, stream_maxlen: int = STREAM_MAXLEN,
                 dedupe_ttl_s: int = DEDUPE_TTL_S, send: Send | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if stream_maxlen < 1 or dedupe_ttl_s < 1:
            raise ValueError("stream_maxlen and dedupe_ttl_s must be positive")
        self._redis = client
        self._maxlen = stream_maxlen
        self._ttl = dedupe_ttl_s
        self._send = send or _send_with_actor
        self._clock = clock

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None:
        """Raise a notification of ``kind`` for ``tenant`` unless one was raised in ``window`` already.

        ``message`` is the text every channel shows, as given (URLs' query strings redacted); ``details``
        are the kind's facts (see ``worker.notifications.model``). Raises ``ValueError`` only for a caller's
        mistake (unknown kind, invalid tenant or window), never for a delivery fault.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown notification kind {kind!r}: use one of {', '.join(sorted(KINDS))}")
        validate_tenant(tenant)
        _check_window(window)
        log = structlog.get_logger("crmsync.notify")
        notification = Notification(
            id=uuid.uuid4().hex, at=datetime.fromtimestamp(self._clock(), UTC), kind=kind, tenant=tenant,
            window=window, message=redact_text(str(message)), details=scrub_details(details))
        try:
            first = self._redis.set(keys.notified(tenant, kind, window), notification.id, nx=True, ex=self._ttl)
        except redis.RedisError as exc:
            # Without Redis we cannot tell a repeat: the log still gets it, the other channels cannot.
            self._log(log, notification, dedupe="unavailable")
            self._failed(log, notification, "stream", exc)
            return
        if not first:
            NOTIFICATIONS.labels(kind=kind, channel="none", outcome="deduplicated").inc()
            log.debug("notification_deduplicated", kind=kind, tenant=tenant, window=window)
            return
        self._log(log, notification)
        self._to_stream(log, notification)
        self._to_slow_channels(log, notification)

    def _log(self, log: Any, notification: Notification, **extra: str) -> None:
        log.warning("notification", notification_id=notification.id, kind=notification.kind,
                    tenant=notification.tenant, window=notification.window, message=notification.message,
                    details=notification.details, **extra)
        NOTIFICATIONS.labels(kind=notification.kind, channel="log", outcome="delivered").inc()

    def _failed(self, log: Any, notification: Notification, channel: str, error: Exception) -> None:
        NOTIFICATIONS.labels(kind=notification.kind, channel=channel, outcome="failed").inc()
        log.error("notification_delivery_failed", notification_id=notification.id, kind=notification.kind,
                  tenant=notification.tenant, channel=channel, error=f"{type(error).__name__}: {error}")

    def _to_stream(self, log: Any, notification: Notification) -> None:
        try:
            self._redis.xadd(keys.NOTIFICATIONS, cast(Any, notification.to_fields()), maxlen=self._maxlen,
                             approximate=True)
        except redis.RedisError as exc:
            self._failed(log, notification, "stream", exc)
            return
        NOTIFICATIONS.labels(kind=notification.kind, channel="stream", outcome="delivered").inc()

    def _to_slow_channels(self, log: Any, notification: Notification) -> None:
        try:
            channels = ChannelStore(self._redis).load()
        except redis.RedisError as exc:
            # Not counted: which channels were missed is unknown. The log and the stream have it.
            log.error("notification_channels_unavailable", notification_id=notification.id,
                      kind=notification.kind, tenant=notification.tenant, error=f"{type(exc).__name__}: {exc}")
            return
        payload = notification.to_json()
        for target in targets(channels):
            try:
                self._send(payload, target)
            except Exception as exc:  # a broker fault of any kind must not fail the job
                self._failed(log, notification, "email" if target == "email" else "webhook", exc)


def recent(client: redis.Redis, tenant: str | None = None, *, limit: int = 20) -> list[Notification]:
    """The newest ``limit`` notifications in the stream (of ``tenant`` only, if given), newest first."""
    found: list[Notification] = []
    upper = "+"
    while len(found) < limit:
        batch = cast(list[tuple[Any, dict[Any, Any]]],
                     client.xrevrange(keys.NOTIFICATIONS, max=upper, min="-", count=500))
        for _entry_id, fields in batch:
            data = {text(k): text(v) for k, v in fields.items()}
            if tenant is not None and data.get("tenant") != tenant:
                continue
            try:
                found.append(Notification.from_json(data))
            except ValueError:
                continue  # an entry written by hand or by a newer version: skip it, list the rest
            if len(found) == limit:
                break
        if len(batch) < 500:
            break
        last = batch[-1][0]
        upper = f"({text(last)}"
    return found
