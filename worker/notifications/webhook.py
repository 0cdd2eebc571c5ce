"""Webhook delivery: one JSON POST of the notification, with a timeout.

Errors are re-raised as ``DeliveryFailed`` naming the webhook by id and host only: requests' own messages
carry the full URL, query string and all, and must never reach a log.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from worker.errors import DeliveryFailed
from worker.notifications.channels import Webhook
from worker.notifications.model import Notification

__all__ = ["DEFAULT_TIMEOUT_S", "post_webhook"]

DEFAULT_TIMEOUT_S = 5.0
# Worth another try: the receiver is overloaded, restarting or rate limiting us.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def post_webhook(hook: Webhook, notification: Notification, *, timeout: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None) -> None:
    """POST ``notification`` as JSON to ``hook``; raise ``DeliveryFailed`` unless it answers 2xx."""
    name = f"webhook {hook.id} ({urlsplit(hook.url).hostname})"
    poster = session or requests
    try:
        response = poster.post(hook.url, json=notification.to_json(), timeout=timeout, allow_redirects=False,
                               headers={"User-Agent": "crmsync-notifications/1"})
    except requests.Timeout:
        raise DeliveryFailed(f"{name}: no answer within {timeout:g}s") from None
    except requests.RequestException as exc:
        raise DeliveryFailed(f"{name}: {type(exc).__name__} (connection failed)") from None
    with response:
        if 200 <= response.status_code < 300:
            return
        raise DeliveryFailed(f"{name}: HTTP {response.status_code}",
                             permanent=response.status_code not in _TRANSIENT_STATUS)
