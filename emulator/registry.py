"""All orgs of one emulator and the access tokens that identify them; one lock guards it all."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emulator.cursors import CursorPolicy
from emulator.orgs import Environment, Org

__all__ = ["ORG_NAME", "Registry", "Settings"]

ORG_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass
class Settings:
    """Defaults for new orgs and tokens."""

    records: int = 50
    daily_limit: int = 100_000
    token_ttl: float = 7200.0
    count_token_requests: bool = False
    cursors: CursorPolicy = field(default_factory=CursorPolicy)
    api_overdraft: int = 0


class Registry:
    """Orgs by name and tokens by value; callers hold ``lock`` around every use."""

    def __init__(self, settings: Settings, clock: Callable[[], float], key_dir: Path) -> None:
        self.settings = settings
        self.clock = clock
        self.key_dir = key_dir
        self.lock = threading.RLock()
        self.orgs: dict[str, Org] = {}
        self.base_url = ""
        self._tokens: dict[str, tuple[Org, float]] = {}
        self._pods = 0

    def add_org(self, name: str, environment: Environment = "production", records: int | None = None,
                daily_limit: int | None = None) -> Org:
        """Create and seed an org with a ready access token."""
        if not ORG_NAME.match(name):
            raise ValueError(f"org name {name!r} must be 1-40 of a-z, 0-9, '-', '_', starting alphanumeric")
        if name in self.orgs:
            raise ValueError(f"org {name!r} already exists")
        if environment not in ("production", "sandbox"):
            raise ValueError(f"environment must be production or sandbox, not {environment!r}")
        records = self.settings.records if records is None else records
        limit = self.settings.daily_limit if daily_limit is None else daily_limit
        if records < 0 or limit < 0:
            raise ValueError("records and daily_limit must be >= 0")
        self._pods += 1
        org = Org(name, environment, pod=self._pods, records=records, daily_limit=limit, clock=self.clock,
                  key_dir=self.key_dir, cursors=self.settings.cursors, api_overdraft=self.settings.api_overdraft)
        self.orgs[name] = org
        org.ready_token = self.issue_token(org)
        return org

    def remove_org(self, name: str) -> None:
        """Forget an org; its tokens stop working at once."""
        org = self.org(name)
        del self.orgs[name]
        self._forget(lambda holder: holder is org)

    def org(self, name: str) -> Org:
        """The org called ``name``; KeyError names the known ones."""
        try:
            return self.orgs[name]
        except KeyError:
            raise KeyError(f"no org {name!r}; known: {', '.join(sorted(self.orgs)) or 'none'}") from None

    def by_client_id(self, client_id: str) -> Org | None:
        """The org whose connected app has ``client_id``."""
        return next((o for o in self.orgs.values() if secrets.compare_digest(o.client_id, client_id)), None)

    def issue_token(self, org: Org) -> str:
        """A new access token for ``org``, valid for ``token_ttl`` seconds of the clock."""
        token = f"{org.org_id[:15]}!{secrets.token_urlsafe(48)}"
        self._tokens[token] = (org, self.clock() + self.settings.token_ttl)
        org.ready_token = token
        return token

    def authenticate(self, token: str) -> Org | None:
        """The org of a live token, or None when it is unknown or expired."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        org, expires_at = entry
        if self.clock() >= expires_at:
            del self._tokens[token]
            return None
        return org

    def expire_tokens(self, name: str) -> None:
        """End every access token of an org (refresh tokens and JWT keys keep working)."""
        org = self.org(name)
        self._forget(lambda holder: holder is org)

    def _forget(self, match: Callable[[Org], bool]) -> None:
        self._tokens = {t: entry for t, entry in self._tokens.items() if not match(entry[0])}
