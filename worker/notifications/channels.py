"""Notification channels, held in Redis (``keys.NOTIFY_CONFIG``) so a change applies to the next notification.

The hash has one field per webhook, ``webhook:<ID>`` -> ``{"url", "added_at"}`` (``ID`` is derived from the
URL, so adding twice is one webhook and concurrent adds never overwrite each other), and ``email`` -> the SMTP
settings as JSON. The SMTP password is stored only as a reference (``file:/path`` or ``env:NAME``).

A webhook URL is a secret: chat services put their token in its path (``https://hooks.slack.com/services/T/B/X``)
or its query. It is read only to post to it; everything else (commands, logs, errors, metrics, broker messages,
delivery records) names a webhook by its id and host (``Webhook.name``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import redis

from quota.errors import InvalidInput
from quota.replies import text
from worker import keys
from worker.errors import SecretUnavailable
from worker.secrets import env_ref, file_ref, read_secret

__all__ = [
    "MAX_WEBHOOKS",
    "ChannelStore",
    "Channels",
    "EmailSettings",
    "Webhook",
    "check_address",
    "check_webhook_url",
    "password_ref",
    "webhook_host",
    "webhook_id",
]

MAX_WEBHOOKS = 20
_EMAIL_FIELD = "email"
_WEBHOOK_PREFIX = "webhook:"
_MAX_URL = 2048
_ADDRESS = re.compile(r"[^@\s,;<>\"()]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def webhook_id(url: str) -> str:
    """A short stable id for a webhook URL: what logs, metrics and broker messages name instead of the URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def webhook_host(url: str) -> str:
    """The host (and port, if the URL gives one) of a webhook URL: all of it that may be shown. Never the path
    or the query, where tokens live, nor a user:password."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return "<unparsable URL>"
    # Drop user:password@ and parse nothing else: a URL being refused may have a malformed port.
    return netloc.rpartition("@")[2] or "<no host>"


def check_webhook_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise ``InvalidInput``."""
    if not url or len(url) > _MAX_URL or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidInput(f"invalid webhook URL: it must be 1-{_MAX_URL} characters without spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port out of range)
    except ValueError:
        raise InvalidInput(f"invalid webhook URL (host {webhook_host(url)}): malformed host or port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput(f"invalid webhook URL (host {webhook_host(url)}): use http:// or https:// with a host")
    return url


def check_address(address: str) -> str:
    """Return ``address`` if it looks like ``local@domain.tld``, else raise ``InvalidInput``."""
    if not _ADDRESS.fullmatch(address):
        raise InvalidInput(f"invalid email address {address!r}: use local@domain, e.g. ops@example.com")
    return address


@dataclass(frozen=True)
class Webhook:
    """A webhook channel. ``url`` may hold a token: show ``name`` (or ``id`` and ``host``), never the URL."""

    url: str
    added_at: datetime

    @property
    def id(self) -> str:
        """The webhook's id (see ``webhook_id``)."""
        return webhook_id(self.url)

    @property
    def host(self) -> str:
        """The URL's host (and port, if given): see ``webhook_host``."""
        return webhook_host(self.url)

    @property
    def name(self) -> str:
        """How the webhook is shown everywhere: ``webhook <ID> (<HOST>)``."""
        return f"webhook {self.id} ({self.host})"


@dataclass(frozen=True)
class EmailSettings:
    """SMTP delivery settings. ``password_ref`` is a secret reference, never the password."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password_ref: str | None = None

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.host):
            raise InvalidInput(f"invalid SMTP host {self.host!r}: give a host name or IP address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise InvalidInput(f"invalid SMTP port {self.port!r}: use a whole number from 1 to 65535")
        check_address(self.sender)
        if not self.recipients:
            raise InvalidInput("give at least one recipient with --to")
        for address in self.recipients:
            check_address(address)
        if (self.username is None) != (self.password_ref is None):
            raise InvalidInput("give --username together with --password-file or --password-env, or neither")
        if self.username is not None and (not self.username or any(ch.isspace() for ch in self.username)):
            raise InvalidInput("invalid SMTP username: it must be non-empty, without spaces")

    def to_json(self) -> dict[str, Any]:
        """As stored in Redis and shown by ``notify show`` (the reference, never the password)."""
        return {"host": self.host, "port": self.port, "from": self.sender, "to": list(self.recipients),
                "starttls": self.starttls, "username": self.username, "password_ref": self.password_ref}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmailSettings:
        """Back from ``to_json``; raises ``InvalidInput`` if the stored value is malformed."""
        try:
            return cls(host=data["host"], port=data["port"], sender=data["from"], recipients=tuple(data["to"]),
                       starttls=bool(data.get("starttls")), username=data.get("username"),
                       password_ref=data.get("password_ref"))
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"stored SMTP settings are malformed ({type(exc).__name__})") from None


def password_ref(password_file: str | None, password_env: str | None) -> str | None:
    """The reference for an SMTP password given as a file or an environment variable, checked readable now."""
    if password_file is not None and password_env is not None:
        raise InvalidInput("give the SMTP password either with --password-file or with --password-env, not both")
    if password_file is None and password_env is None:
        return None
    try:
        ref = file_ref(password_file) if password_file is not None else env_ref(cast(str, password_env))
        read_secret(ref)  # read to prove it is there; the value is dropped at once
    except SecretUnavailable as exc:
        raise InvalidInput(f"SMTP password: {exc}") from None
    return ref


@dataclass(frozen=True)
class Channels:
    """The channels configured beyond the log and the stream, which are always on."""

    webhooks: tuple[Webhook, ...] = ()
    email: EmailSettings | None = None

    def webhook(self, ident: str) -> Webhook | None:
        """The webhook with id ``ident``, if it is still configured."""
        return next((w for w in self.webhooks if w.id == ident), None)


class ChannelStore:
    """Reads and changes the channel config in Redis. Every change is one atomic command."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def load(self) -> Channels:
        """The current channels. A malformed entry (hand-edited Redis) is skipped rather than failing all."""
        raw = cast(dict[bytes | str, bytes | str], self._redis.hgetall(keys.NOTIFY_CONFIG))
        webhooks: list[Webhook] = []
        email = None
        for name, value in ((text(k), text(v)) for k, v in raw.items()):
            try:
                data = json.loads(value)
                if name == _EMAIL_FIELD:
                    email = EmailSettings.from_json(data)
                elif name.startswith(_WEBHOOK_PREFIX):
                    webhooks.append(Webhook(check_webhook_url(data["url"]), datetime.fromisoformat(data["added_at"])))
            except (ValueError, KeyError, TypeError):
                continue
        return Channels(tuple(sorted(webhooks, key=lambda w: (w.added_at, w.url))), email)

    def add_webhook(self, url: str, *, now: datetime | None = None) -> Webhook:
        """Add a webhook (adding one already there keeps it as it was)."""
        check_webhook_url(url)
        hook = Webhook(url, now or datetime.now(UTC))
        current = self.load()
        if len(current.webhooks) >= MAX_WEBHOOKS and current.webhook(hook.id) is None:
            raise InvalidInput(f"at most {MAX_WEBHOOKS} webhooks: remove one first")
        value = json.dumps({"url": url, "added_at": hook.added_at.isoformat()})
        if not self._redis.hsetnx(keys.NOTIFY_CONFIG, _WEBHOOK_PREFIX + hook.id, value):
            existing = self.load().webhook(hook.id)
            return existing or hook
        return hook

    def remove_webhook(self, url_or_id: str) -> Webhook | None:
        """Remove the webhook with this URL (or id) and return it; None if there was none (nothing changed)."""
        ident = url_or_id if re.fullmatch(r"[0-9a-f]{12}", url_or_id) else webhook_id(url_or_id)
        hook = self.load().webhook(ident)
        if hook is None or not self._redis.hdel(keys.NOTIFY_CONFIG, _WEBHOOK_PREFIX + ident):
            return None
        return hook

    def set_email(self, settings: EmailSettings) -> None:
        """Replace the SMTP settings."""
        self._redis.hset(keys.NOTIFY_CONFIG, _EMAIL_FIELD, json.dumps(settings.to_json()))

    def clear_email(self) -> bool:
        """Turn email delivery off; False if it was not set."""
        return bool(self._redis.hdel(keys.NOTIFY_CONFIG, _EMAIL_FIELD))
