"""``EmulatorServer``: the whole emulator in-process, as a context manager."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import trustme

from emulator.app import ADMIN_PREFIX, App
from emulator.bulk_jobs import DEFAULT_BULK_RATE
from emulator.control import Control
from emulator.cursors import CURSOR_LIFETIME, CursorPolicy
from emulator.orgs import Environment, OrgInfo
from emulator.registry import Registry, Settings
from emulator.transport import HttpServer

__all__ = ["DEFAULT_ORGS", "EmulatorServer", "parse_org_spec"]

DEFAULT_ORGS = ("acme", "globex")


def parse_org_spec(spec: str) -> tuple[str, Environment]:
    """``name`` or ``name:production`` or ``name:sandbox`` as ``(name, environment)``."""
    name, _, environment = spec.strip().partition(":")
    environment = environment or "production"
    if environment not in ("production", "sandbox"):
        raise ValueError(f"org {spec!r}: environment must be production or sandbox")
    return name, cast(Environment, environment)


class EmulatorServer:
    """A local HTTPS Salesforce with several orgs, serving on loopback from background threads.

    ``orgs`` are specs such as ``"acme"`` or ``"acme-sandbox:sandbox"``; ``clock`` returns epoch seconds
    and drives token expiry, the rolling usage windows, record timestamps and the progress of Bulk API jobs,
    which process ``bulk_rate`` records per second (0: at once). Token requests are free unless
    ``count_token_requests``. Query cursors stay open ``cursor_lifetime`` seconds after their query (Salesforce:
    2 days), at most ``cursor_limit`` per user (None: no limit, as Salesforce since API 56.0), and, with
    ``cursor_idle_timeout``, expire that long after their last use. Each org serves ``api_overdraft`` requests
    past its daily max before answering 403. Every org takes these defaults; ``control`` changes them per org.
    """

    def __init__(self, orgs: Iterable[str] = DEFAULT_ORGS, *, records: int = 50, daily_limit: int = 100_000,
                 token_ttl: float = 7200.0, clock: Callable[[], float] = time.time, port: int = 0,
                 host: str = "127.0.0.1", count_token_requests: bool = False,
                 bulk_rate: float = DEFAULT_BULK_RATE, cursor_limit: int | None = None,
                 cursor_idle_timeout: float | None = None, cursor_lifetime: float = CURSOR_LIFETIME,
                 api_overdraft: int = 0) -> None:
        if token_ttl <= 0:
            raise ValueError("token_ttl must be > 0")
        if api_overdraft < 0:
            raise ValueError("api_overdraft must be >= 0")
        cursors = CursorPolicy(cursor_limit, cursor_idle_timeout, cursor_lifetime)
        self._org_specs = [parse_org_spec(spec) for spec in orgs]
        self._dir = Path(tempfile.mkdtemp(prefix="crmsync-emulator-"))
        settings = Settings(records, daily_limit, token_ttl, count_token_requests, cursors, api_overdraft)
        self.registry = Registry(settings, clock, self._dir)
        self.admin_token = f"admin-{secrets.token_urlsafe(32)}"
        self._app = App(self.registry, self.admin_token, bulk_rate)
        self.control: Control = self._app.control
        self._host = host
        self._port = port
        self._http: HttpServer | None = None
        self.base_url = ""
        self.ca_bundle = str(self._dir / "ca.pem")

    def start(self) -> Self:
        """Make the CA, bind, seed the orgs and serve."""
        ca = trustme.CA(organization_name="crmsync emulator")
        ca.cert_pem.write_to_path(self.ca_bundle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(self._host, "localhost", "127.0.0.1").configure_cert(context)
        self._http = HttpServer(self._app, context, self._host, self._port)
        port = self._http.start()
        self.base_url = f"https://{self._host}:{port}"
        with self.registry.lock:
            self.registry.base_url = self.base_url
            for name, environment in self._org_specs:
                self.control.add_org(name, environment)
        return self

    def stop(self) -> None:
        """Stop serving and delete the CA bundle and keys."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def admin_url(self) -> str:
        """Base of the admin path: ``POST {admin_url}/{control method}``."""
        return self.base_url + ADMIN_PREFIX.rstrip("/")

    @property
    def orgs(self) -> dict[str, OrgInfo]:
        """Every org by name (a fresh snapshot: tokens issued later show up on the next read)."""
        return self.control.orgs()

    def ready_info(self) -> dict[str, Any]:
        """The ready file's content."""
        return {
            "base_url": self.base_url,
            "ca_bundle": self.ca_bundle,
            "admin_url": self.admin_url,
            "admin_token": self.admin_token,
            "pid": os.getpid(),
            "orgs": {name: info.to_json() for name, info in self.orgs.items()},
        }

    def write_ready_file(self, path: str | Path) -> None:
        """Write the ready file atomically, so a reader never sees half of it."""
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(self.ready_info(), indent=2) + "\n")
        partial.chmod(0o600)
        partial.replace(target)
