"""Error notifications: the hook every integration failure goes through.

The worker raises a notification through a ``Notifier``; until the notifications channels exist, the
default writes each one to the log as a structured ``notification`` event.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

__all__ = ["LogNotifier", "Notifier"]


class Notifier(Protocol):
    """Raises an error notification of ``kind`` for ``tenant``, at most once per ``window``.

    ``window`` names the episode the notification belongs to (a quota window's end, a pause's start, a job
    id): many workers hitting the same empty bucket raise one notification, not a storm.
    """

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None: ...


class LogNotifier:
    """Writes each notification to the log."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("crmsync.notify")

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None:
        """Log the notification as one structured event."""
        self._log.warning("notification", kind=kind, tenant=tenant, message=message, window=window, **details)
