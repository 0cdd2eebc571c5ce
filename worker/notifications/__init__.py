"""Error notifications: raised once per tenant, kind and window; delivered to the log, a bounded Redis stream,
and optionally webhooks and email (by the ``crmsync_deliver_notification`` actor on queue ``crmsync-notify``,
in ``worker.notifications.delivery``, which the worker app declares so its processes consume the queue).
Webhook and email deliveries are retried for up to 24 hours (``retry_policy``) and sent at most once each
(``ledger``); a webhook is shown by its id and host only (``channels``).

What the worker raises, and in which words, is in ``worker.notifications.notifier``.
"""

from __future__ import annotations

from worker.notifications.center import DEDUPE_TTL_S, STREAM_MAXLEN, NotificationCenter, recent
from worker.notifications.channels import Channels, ChannelStore, EmailSettings, Webhook
from worker.notifications.model import KINDS, Notification

__all__ = [
    "DEDUPE_TTL_S",
    "KINDS",
    "STREAM_MAXLEN",
    "ChannelStore",
    "Channels",
    "EmailSettings",
    "Notification",
    "NotificationCenter",
    "Webhook",
    "recent",
]
