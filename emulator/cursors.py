"""Server-side query cursors of one org: what ``nextRecordsUrl`` points at, how many stay open and for how long."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from emulator.errors import ApiError
from emulator.ids import BASE62, to_18
from emulator.soql import Query

__all__ = ["CURSOR_LIFETIME", "CursorPolicy", "Cursors", "invalid_locator"]

# Salesforce keeps a cursor and its results for 2 days after the query ran, with no limit on how many are open
# (since API 56.0). Before that a user had at most 10, the oldest released first, each expiring after 15 minutes
# without use: CursorPolicy(limit=10, idle_timeout=900) brings that back.
CURSOR_LIFETIME = 2 * 24 * 3600.0


def invalid_locator() -> ApiError:
    """400 INVALID_QUERY_LOCATOR: the locator is unknown, released or expired."""
    return ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")


@dataclass(frozen=True)
class CursorPolicy:
    """How many cursors one user keeps open (None: no limit) and when they expire (seconds; None: never idle)."""

    limit: int | None = None
    idle_timeout: float | None = None
    lifetime: float = CURSOR_LIFETIME

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("cursor limit must be >= 1 (None for no limit)")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("cursor idle timeout must be > 0 (None for none)")
        if self.lifetime <= 0:
            raise ValueError("cursor lifetime must be > 0")

    def changed(self, **changes: Any) -> CursorPolicy:
        """A copy with the given fields changed (checked again)."""
        return replace(self, **changes)


@dataclass
class _Cursor:
    rows: list[dict[str, Any]]
    query: Query
    opened_at: float
    used_at: float


class Cursors:
    """Open cursors by locator, oldest first; every org's user is the emulator's one integration user."""

    def __init__(self, policy: CursorPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._open: dict[str, _Cursor] = {}

    def open(self, rows: list[dict[str, Any]], query: Query) -> str:
        """Keep a query's result ``rows`` behind a new locator and return it; past the limit the oldest goes."""
        now = self._clock()
        # Cursors are kept in the order they were opened, so those past their lifetime are at the front; an idle
        # one further back goes when it is next asked for or reaches its lifetime.
        while self._open and self._expired(next(iter(self._open.values())), now):
            del self._open[next(iter(self._open))]
        locator = to_18("01g" + "".join(secrets.choice(BASE62) for _ in range(12))) or ""
        self._open[locator] = _Cursor(rows, query, now, now)
        limit = self.policy.limit
        while limit is not None and len(self._open) > limit:
            del self._open[next(iter(self._open))]
        return locator

    def get(self, locator: str) -> tuple[list[dict[str, Any]], Query]:
        """The rows and query behind a live locator, marking it used now; INVALID_QUERY_LOCATOR otherwise."""
        now = self._clock()
        cursor = self._open.get(locator)
        if cursor is None or self._expired(cursor, now):
            self._open.pop(locator, None)
            raise invalid_locator()
        cursor.used_at = now
        return cursor.rows, cursor.query

    def __len__(self) -> int:
        now = self._clock()
        return sum(not self._expired(c, now) for c in self._open.values())

    def _expired(self, cursor: _Cursor, now: float) -> bool:
        idle = self.policy.idle_timeout
        return now >= cursor.opened_at + self.policy.lifetime or (idle is not None and now >= cursor.used_at + idle)
