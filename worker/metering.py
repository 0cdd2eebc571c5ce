"""The one place every Salesforce request passes through: a credit first, then the request.

simple-salesforce is handed a ``MeteredSession``. Its ``send`` sees every HTTP request simple-salesforce
makes (each query page, each retry, each redirect), takes one credit from the tenant's bucket for each one
Salesforce counts, refunds the credit when the request was certainly never sent, and records the org's own
usage from the ``Sforce-Limit-Info`` header.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis
import requests
import structlog
import urllib3.exceptions

from quota import keys
from quota.bucket import CreditBucket, Grant
from quota.errors import QuotaExhausted
from worker.errors import OrgLimitExceeded

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "MeteredSession",
    "MeteringObserver",
    "OrgUsage",
    "OrgUsageCache",
    "RequestEvent",
    "is_metered",
    "never_sent",
    "parse_limit_info",
]

log = structlog.get_logger("crmsync.metering")

# Not anchored to the start, as the header may carry other parts before or after; but not the tail of
# "per-app-api-usage", which counts one connected app, not the org.
_API_USAGE = re.compile(r"(?<![\w-])api-usage=(\d+)/(\d+)")
_VERSIONED_API = re.compile(r"^/services/data/v\d+\.\d+(/|$)")
# Salesforce stops a query at 120 s (QUERY_TIMEOUT); a reply still missing after that will not come.
DEFAULT_REQUEST_TIMEOUT_S = 130.0
CONNECT_TIMEOUT_S = 10.0


def is_metered(url: str) -> bool:
    """Whether Salesforce counts a request to ``url``: every versioned REST call, not the versions list."""
    return bool(_VERSIONED_API.match(urlsplit(url).path))


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """``(used, max)`` from a ``Sforce-Limit-Info`` header, or ``None`` when it has no ``api-usage`` part."""
    match = _API_USAGE.search(header or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def never_sent(error: BaseException) -> bool:
    """Whether a requests error proves the request never reached Salesforce (so it cannot have counted).

    A refused or timed-out connect, or a failed TLS handshake, sends nothing. A connection dropped after
    the request went out may have been counted, so it is not refunded.
    """
    if isinstance(error, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    reason: Any = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 wraps the cause in MaxRetryError
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


@dataclass(frozen=True, slots=True)
class OrgUsage:
    """Salesforce's own count for the org, as last reported to this tenant."""

    used: int
    max: int
    at: float

    @property
    def share(self) -> float:
        """Used as a share of max (may exceed 1.0: Salesforce lets usage pass its max briefly)."""
        return self.used / self.max if self.max else 0.0

    @classmethod
    def read(cls, client: redis.Redis, tenant: str) -> OrgUsage | None:
        """The last usage recorded for ``tenant``, or ``None``."""
        raw: Any = client.hmget(keys.org_usage(tenant), ["used", "max", "at"])
        try:
            return cls(int(raw[0]), int(raw[1]), float(raw[2]))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One metered request as observers see it. ``outcome`` is the HTTP status, ``connection_error`` or
    ``not_sent`` (refunded)."""

    tenant: str
    sobject: str
    method: str
    url: str
    outcome: str
    seconds: float
    charged: bool


class OrgUsageCache:
    """A process's view of each org's usage, shared by its sessions.

    Every response reports the org's usage; reading and writing it in Redis on every request would double the
    round trips metering costs. So it is read at most once per ``max_age`` seconds per tenant, and written at
    once only when it is the first news in ``max_age`` or reaches ``urgent_share`` (so other processes pause in
    time). Newer news is kept in memory and written by a background thread every ``max_age``, all tenants in
    one round trip: Redis is never more than ``max_age`` behind this process.
    """

    def __init__(self, client: redis.Redis, *, max_age: float = 1.0, urgent_share: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = client
        self.max_age = max_age
        self.urgent_share = urgent_share
        self.clock = clock
        self._seen: dict[str, tuple[float, OrgUsage | None]] = {}
        self._written: dict[str, float] = {}
        self._pending: dict[str, OrgUsage] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def get(self, tenant: str) -> OrgUsage | None:
        """The org's last known usage, from Redis when this process's copy is older than ``max_age``."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(tenant)
        if seen is not None and now - seen[0] < self.max_age:
            return seen[1]
        usage = OrgUsage.read(self.redis, tenant)
        with self._lock:
            self._seen[tenant] = (now, usage)
        return usage

    def record(self, tenant: str, used: int, maximum: int, at: float) -> None:
        """Remember what a response reported, and write it to Redis unless it was written just now."""
        usage = OrgUsage(used, maximum, at)
        now = self.clock()
        urgent = self.urgent_share is not None and usage.share >= self.urgent_share
        with self._lock:
            self._seen[tenant] = (now, usage)
            due = urgent or now - self._written.get(tenant, float("-inf")) >= self.max_age
            if due:
                self._written[tenant] = now
                self._pending.pop(tenant, None)
            else:
                self._pending[tenant] = usage
                self._start_writer()
        if due:
            self.redis.hset(keys.org_usage(tenant), mapping=_usage_fields(usage))

    def flush(self) -> None:
        """Write every usage kept only in memory, in one round trip; on a Redis error keep it for next time."""
        with self._lock:
            pending, self._pending = self._pending, {}
            now = self.clock()
            self._written.update(dict.fromkeys(pending, now))
        if not pending:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, usage in pending.items():
            pipe.hset(keys.org_usage(tenant), mapping=_usage_fields(usage))
        try:
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                for tenant, usage in pending.items():
                    self._pending.setdefault(tenant, usage)  # unless a newer one came meanwhile
            raise

    def close(self) -> None:
        """Stop the background writer and write what is left (a worker process shutting down)."""
        self._stop.set()
        self.flush()

    def _start_writer(self) -> None:
        # Under self._lock. A thread inherited across fork is not alive in the child: it starts its own.
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_pending, name="org-usage-writer", daemon=True)
            self._writer.start()

    def _write_pending(self) -> None:
        while not self._stop.wait(self.max_age):
            try:
                self.flush()
            except redis.RedisError as exc:
                log.warning("org_usage_write_failed", error=f"{type(exc).__name__}: {exc}")


def _usage_fields(usage: OrgUsage) -> dict[str, float]:
    return {"used": usage.used, "max": usage.max, "at": usage.at}


class MeteringObserver(Protocol):
    """Hooks around each metered request (metrics and notifications plug in here)."""

    def after_request(self, event: RequestEvent) -> None: ...


class MeteredSession(requests.Session):
    """A ``requests.Session`` that pays one credit from ``tenant``'s bucket before each counted request."""

    def __init__(
        self,
        tenant: str,
        bucket: CreditBucket,
        *,
        sobject: str = "",
        observers: tuple[MeteringObserver, ...] = (),
        org_pause_share: float | None = None,
        org_usage: OrgUsageCache | None = None,
        on_grant: Callable[[str, Grant], None] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.tenant = tenant
        self.bucket = bucket
        self.sobject = sobject
        self.observers = observers
        self.org_pause_share = org_pause_share
        self.on_grant = on_grant
        self.clock = clock
        # A hung Salesforce must not hold a worker thread forever: past the read timeout the request counts
        # as a transient fault (charged: it may have been counted) and is retried.
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout), timeout)
        self.charged = 0
        self.refunded = 0
        self.org_usage = org_usage or OrgUsageCache(bucket.redis, max_age=0.0)

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        """Let a CA bundle set on the session win over ``REQUESTS_CA_BUNDLE`` (requests prefers the environment)."""
        if verify is None and self.verify is not True:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request``, paying for it first when Salesforce counts it."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if not is_metered(request.url or ""):
            return super().send(request, **kwargs)
        return self.send_metered(request, **kwargs)

    def send_metered(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Pay one credit for ``request``, send it, and report it to the observers."""
        self._guard_org()
        grant = self.bucket.take(self.tenant, 1)
        if not grant.granted:
            raise QuotaExhausted(self.tenant, remaining=grant.remaining, limit=grant.limit,
                                 resets_at=grant.resets_at if grant.limit else None)
        self.charged += 1
        if self.on_grant is not None:
            self.on_grant(self.tenant, grant)
        started = time.perf_counter()
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException as exc:
            refunded = never_sent(exc) and self.bucket.refund(self.tenant, 1, grant=grant) == 1
            self.refunded += int(refunded)
            self._notify(request, "not_sent" if refunded else "connection_error", started, charged=not refunded)
            raise
        self._record_usage(response)
        self._notify(request, str(response.status_code), started, charged=True)
        return response

    def _guard_org(self) -> None:
        # Leave the customer's other integrations room: stop before the org's own limit, not at it.
        if self.org_pause_share is None:
            return
        usage = self.org_usage.get(self.tenant)
        if usage is not None and usage.max and usage.share >= self.org_pause_share:
            raise OrgLimitExceeded(
                self.tenant, f"its usage {usage.used:,}/{usage.max:,} reached {self.org_pause_share:.0%} of the "
                "org's daily limit (set by CRMSYNC_ORG_PAUSE_SHARE)",
            )

    def _record_usage(self, response: requests.Response) -> None:
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self.org_usage.record(self.tenant, usage[0], usage[1], self.clock())

    def _notify(self, request: requests.PreparedRequest, outcome: str, started: float, *, charged: bool) -> None:
        event = RequestEvent(self.tenant, self.sobject, request.method or "", request.url or "", outcome,
                             time.perf_counter() - started, charged)
        for observer in self.observers:
            observer.after_request(event)
