"""What a notification is: its kinds, its record, and the scrubbing that keeps secrets out of every channel.

Kinds and the ``details`` each is expected to carry (callers pass them as keyword arguments to ``notify``;
extra details are kept, missing ones are not an error, so a caller never fails over a notification):

=====================  ==========================================================================================
kind                   details
=====================  ==========================================================================================
``quota_warning``      ``used``, ``limit``, ``share`` (the threshold crossed, e.g. 0.8), ``resets_at`` (ISO UTC)
``quota_exhausted``    ``used``, ``limit``, ``resets_at`` (when credits return), ``raise_with``
                       (``crmsync quota set TENANT LIMIT``), ``reserve`` (credits kept for essential jobs),
                       ``remaining``, ``window_mode`` (``daily`` or ``rolling``), ``paused`` (``normal``: only the
                       reserve is left and essential jobs go on; ``all``); the message says them in words
``quota_restored``     ``remaining``, ``limit``, ``resumed_jobs``, ``reserve``, ``available`` (credits normal
                       jobs may take)
``org_limit_exceeded`` ``org_used``, ``org_max``, ``share`` (of the org's max), ``job_id`` if a job stopped on it
``auth_failed``        ``job_id``, ``error`` (Salesforce's error code and description, never a token)
``job_failed``         ``job_id``, ``job_kind`` (pull/push), ``object``, ``error`` (type and text of the last error)
``config_invalid``     ``job_id`` if a job stopped on it, ``error`` (what is wrong and the command that fixes it)
=====================  ==========================================================================================

``window`` names the episode (a quota window's end, a pause's start, a job id): one notification per tenant,
kind and window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "KINDS",
    "Notification",
    "redact_text",
    "scrub_details",
]

KINDS = frozenset({
    "quota_warning",
    "quota_exhausted",
    "quota_restored",
    "org_limit_exceeded",
    "auth_failed",
    "job_failed",
    "config_invalid",
    "bulk_budget_exhausted",
})

# Query strings and user:password@ in URLs carry tokens (webhook URLs, signed links in error texts).
_URL_SECRETS = re.compile(r"(?P<scheme>https?://)(?:[^\s/@]*@)?(?P<rest>[^\s?#]*)(?:\?[^\s#]*)?", re.IGNORECASE)
# Detail names whose values are secrets whatever they hold.
_SECRET_KEY = re.compile(r"passw|secret|token|authorization|api_?key|cookie|credential", re.IGNORECASE)
_REDACTED = "<redacted>"



def redact_text(text: str) -> str:
    """``text`` with every URL's credentials and query string replaced by ``<redacted>``."""
    def replace(match: re.Match[str]) -> str:
        had_query = "?" in match.group(0)
        return f"{match['scheme']}{match['rest']}" + (f"?{_REDACTED}" if had_query else "")

    return _URL_SECRETS.sub(replace, text)


def _scrub(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        result: Any = _REDACTED
    elif value is None or isinstance(value, bool | int | float):
        result = value
    elif isinstance(value, datetime):
        result = value.astimezone(UTC).isoformat()
    elif isinstance(value, date):
        result = value.isoformat()
    elif isinstance(value, dict):
        result = {str(k): _scrub(str(k), v) for k, v in value.items()}
    elif isinstance(value, list | tuple | set | frozenset):
        result = [_scrub("", v) for v in value]
    else:  # strings, and anything else as its text
        result = redact_text(str(value))
    return result


def scrub_details(details: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of ``details``: datetimes as ISO UTC, secrets (by key name, in URLs) redacted."""
    return {str(k): _scrub(str(k), v) for k, v in details.items()}


@dataclass(frozen=True)
class Notification:
    """One raised notification, as every channel sees it (already scrubbed of secrets)."""

    id: str
    at: datetime
    kind: str
    tenant: str
    window: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able values: the webhook body, the actor message, ``notifications --json``."""
        return {"id": self.id, "at": self.at.isoformat(), "kind": self.kind, "tenant": self.tenant,
                "window": self.window, "message": self.message, "details": self.details}

    def to_fields(self) -> dict[str, str]:
        """Stream entry fields: every value a string, ``details`` as JSON."""
        data = self.to_json()
        data["details"] = json.dumps(self.details, sort_keys=True)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notification:
        """Back from ``to_json`` or ``to_fields`` output; raises ``ValueError`` if it is malformed."""
        try:
            details = data.get("details") or {}
            if isinstance(details, str):
                details = json.loads(details)
            if not isinstance(details, dict):
                raise ValueError("details must be a JSON object")
            at = datetime.fromisoformat(str(data["at"]))
            if at.tzinfo is None:
                raise ValueError("at must carry a time zone")
            values = [data[name] for name in ("id", "kind", "tenant", "window", "message")]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed notification: {type(exc).__name__}: {exc}") from None
        if not all(isinstance(v, str) for v in values):
            raise ValueError("malformed notification: id, kind, tenant, window and message must be strings")
        ident, kind, tenant, window, message = values
        if kind not in KINDS:
            raise ValueError(f"unknown notification kind {kind!r}")
        return cls(ident, at, kind, tenant, window, message, details)
