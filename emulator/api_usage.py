"""The daily API request allocation of one org: counting, the 403 past it, and the ``Sforce-Limit-Info`` header."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from emulator.limits import UsageWindow

__all__ = ["ApiUsage"]

# A Sforce-Limit-Info part as Salesforce writes them: name=used/max, optionally followed by "(key=value)".
_PART = re.compile(r"^[a-z][a-z0-9-]*=\d+/\d+(?:\([A-Za-z0-9_ .=-]+\))?$")
_APP_NAME = re.compile(r"^[A-Za-z0-9_ .-]{1,80}$")


class ApiUsage(UsageWindow):
    """Requests counted for one org over the rolling 24 hours, with what Salesforce reports about them.

    ``overdraft`` requests past the max are still served before the org is blocked (real orgs report usage
    above the max for a while); once blocked, the org stays blocked until the usage before a request is below
    the max again, as Salesforce documents it ("calls are blocked until usage for the preceding 24 hours drops
    below the limit"). With an app quota, every counted request also counts against the connected app's own
    window and the header carries ``per-app-api-usage``; ``extra_parts`` are appended to the header as given.
    """

    def __init__(self, max_requests: int, clock: Callable[[], float], overdraft: int = 0) -> None:
        super().__init__(max_requests, clock)
        self.overdraft = overdraft
        self._blocked = False
        self._app_name: str | None = None
        self._app: UsageWindow | None = None
        self._extra: tuple[str, ...] = ()

    def admit(self) -> tuple[int, bool]:
        """Count one request now: ``(usage including it, whether it is served)``."""
        used = self.add()
        if self._app is not None:
            self._app.add()
        if self._blocked and used - 1 < self.max:
            self._blocked = False
        if used > self.max + self.overdraft:
            self._blocked = True
        return used, not self._blocked

    def set_overdraft(self, requests: int) -> None:
        """How many requests past the max are still served before the 403."""
        if requests < 0:
            raise ValueError("overdraft must be >= 0")
        self.overdraft = requests

    def set_reporting(self, app_name: str | None = None, app_max: int | None = None,
                      extra_parts: Iterable[str] = ()) -> None:
        """Report a connected app quota (``per-app-api-usage``) and extra header parts; None drops the quota."""
        parts = tuple(extra_parts)
        bad = [p for p in parts if not _PART.match(p)]
        if bad:
            raise ValueError(f"extra Sforce-Limit-Info parts must look like name=used/max: {bad}")
        if (app_name is None) != (app_max is None):
            raise ValueError("app_name and app_max go together")
        if app_name is not None and (not _APP_NAME.match(app_name) or app_max is None or app_max < 0):
            raise ValueError("app_name must be 1-80 letters, digits, spaces or _.- and app_max >= 0")
        if app_name is None or app_max is None:
            self._app = None
        elif self._app is None or app_name != self._app_name:
            self._app = UsageWindow(app_max, self._clock)
        else:
            self._app.max = app_max  # the same app keeps what it has used
        self._app_name = app_name
        self._extra = parts

    def limit_info(self, used: int) -> str:
        """The ``Sforce-Limit-Info`` value for a request that brought the usage to ``used``."""
        parts = [f"api-usage={used}/{self.max}", *self._extra]
        # The app's part goes last: clients (simple-salesforce among them) read its name up to the final ")".
        if self._app is not None:
            parts.append(f"per-app-api-usage={self._app.used}/{self._app.max}(appName={self._app_name})")
        return "; ".join(parts)

    def limits_entry(self) -> dict[str, Any]:
        """``DailyApiRequests`` of ``/limits``, with the connected app's own entry when it has a quota."""
        entry: dict[str, Any] = {"Max": self.max, "Remaining": max(self.max - self.used, 0)}
        if self._app is not None and self._app_name is not None:
            entry[self._app_name] = {"Max": self._app.max, "Remaining": max(self._app.max - self._app.used, 0)}
        return entry
