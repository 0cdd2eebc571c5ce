"""Webhook delivery: one JSON POST of the notification, with a timeout.

Errors are re-raised as ``DeliveryFailed`` naming the webhook by id and host only: requests' own messages
carry the full URL, path and query and all, and must never reach a log. Each failure says whether the POST may
have arrived (``uncertain``: it was sent and no answer came back), so a retry never posts a notification twice.
"""

from __future__ import annotations

import ssl
from typing import Any

import requests
import urllib3.exceptions

from worker.errors import DeliveryFailed
from worker.notifications.channels import Webhook
from worker.notifications.model import Notification

__all__ = ["DEFAULT_TIMEOUT_S", "post_webhook"]

DEFAULT_TIMEOUT_S = 5.0
# The receiver says it did not take the POST and may later: it is overloaded, restarting or rate limiting us.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def post_webhook(hook: Webhook, notification: Notification, *, timeout: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None) -> None:
    """POST ``notification`` as JSON to ``hook``; raise ``DeliveryFailed`` unless it answers 2xx.

    The notification's id goes along as the ``Idempotency-Key`` header, for receivers that drop repeats.
    """
    poster = session or requests
    try:
        response = poster.post(hook.url, json=notification.to_json(), timeout=timeout, allow_redirects=False,
                               headers={"User-Agent": "crmsync-notifications/1",
                                        "Idempotency-Key": notification.id})
    except requests.RequestException as exc:
        if _never_sent(exc):
            raise DeliveryFailed(f"{hook.name}: {type(exc).__name__} (could not connect)") from None
        raise DeliveryFailed(f"{hook.name}: {type(exc).__name__} after the POST was sent (no answer within "
                             f"{timeout:g}s, or the connection dropped)", uncertain=True) from None
    with response:
        if 200 <= response.status_code < 300:
            return
        raise DeliveryFailed(f"{hook.name}: HTTP {response.status_code}",
                             permanent=response.status_code not in _TRANSIENT_STATUS)


def _never_sent(error: requests.RequestException) -> bool:
    """Whether the POST provably never left: the connection was refused, its host not found, the connect timed
    out, or the host's certificate was refused (checked in the TLS handshake, before any byte of the POST).
    Anything else (another TLS error, a dropped connection, a read timeout) may come after the POST went out."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason: Any = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 wraps the cause in MaxRetryError
    if isinstance(reason, urllib3.exceptions.SSLError):
        return bool(reason.args) and isinstance(reason.args[0], ssl.SSLCertVerificationError)
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
