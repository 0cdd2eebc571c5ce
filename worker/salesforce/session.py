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

from quota.bucket import CreditBucket, Grant
from quota.errors import QuotaExhausted
from worker import keys
from worker.errors import OrgLimitExceeded
from worker.settings import WorkerSettings

__all__ = [
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
_FIELDS = ("used", "max", "at")  # of the org usage hash, crmsync:{T}:org
_VERSIONED_API = re.compile(r"^/services/data/v\d+\.\d+(/|$)")
# Salesforce stops a query at 120 s (QUERY_TIMEOUT); a reply still missing after that will not come.
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
        return cls.parse(client.hmget(keys.org_usage(tenant), list(_FIELDS)))

    @classmethod
    def parse(cls, raw: Any) -> OrgUsage | None:
        """An ``HMGET`` of the usage fields as an ``OrgUsage``; ``None`` when missing or not numbers."""
        try:
            return cls(int(raw[0]), int(raw[1]), float(raw[2]))
        except (TypeError, ValueError, IndexError):
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
    """A process's view of each org's usage, shared by its sessions, kept off the request path.

    Every response reports the org's usage, so an active tenant's view is refreshed by its own responses. Redis
    shares it between processes through a background thread that runs every ``max_age`` seconds: it writes the
    usage this process learned (all tenants in one round trip) and re-reads the usage of tenants asked about
    in the last ``keep_fresh`` seconds. A request touches Redis for org usage only the first time a process
    asks about a tenant (or when the view is older than twice ``max_age``), and when the usage reaches
    ``urgent_share``: that is written at once, so other processes pause in time. With ``max_age`` 0 there is
    no thread: every read and write goes to Redis at once. Tests pass ``background=False`` and call
    ``refresh()`` themselves.
    """

    def __init__(self, client: redis.Redis, *, max_age: float = 1.0, urgent_share: float | None = None,
                 keep_fresh: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 background: bool = True) -> None:
        self.redis = client
        self.background = background
        self.max_age = max_age
        self.urgent_share = urgent_share
        self.keep_fresh = keep_fresh
        self.clock = clock
        self._seen: dict[str, tuple[float, OrgUsage | None]] = {}  # when this process learned it, and what
        self._asked: dict[str, float] = {}
        self._pending: dict[str, OrgUsage] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    def get(self, tenant: str) -> OrgUsage | None:
        """The org's last known usage; read from Redis only when this process has no fresh view of it."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(tenant)
            if self.max_age > 0:
                self._asked[tenant] = now
                self._start_worker()
        if seen is not None and now - seen[0] < 2 * self.max_age:
            return seen[1]
        usage = OrgUsage.read(self.redis, tenant)
        with self._lock:
            self._seen[tenant] = (now, usage)
        return usage

    def record(self, tenant: str, used: int, maximum: int, at: float) -> None:
        """Remember what a response reported; write it to Redis at once only when it is urgent."""
        usage = OrgUsage(used, maximum, at)
        now_urgent = self.max_age <= 0 or (self.urgent_share is not None and usage.share >= self.urgent_share)
        with self._lock:
            self._seen[tenant] = (self.clock(), usage)
            if now_urgent:
                self._pending.pop(tenant, None)
            else:
                self._pending[tenant] = usage
                self._start_worker()
        if now_urgent:
            self.redis.hset(keys.org_usage(tenant), mapping=_usage_fields(usage))

    def refresh(self) -> None:
        """One round trip: write every usage kept only in memory, and re-read the usage of the tenants asked
        about lately whose view is ``max_age`` old. On a Redis error the writes are kept for next time."""
        with self._lock:
            now = self.clock()
            pending, self._pending = self._pending, {}
            for tenant in [t for t, asked in self._asked.items() if now - asked >= self.keep_fresh]:
                del self._asked[tenant]  # idle: the next get reads it afresh
            stale = [t for t in self._asked
                     if t not in pending and now - self._seen.get(t, (float("-inf"), None))[0] >= self.max_age]
        if not pending and not stale:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, usage in pending.items():
            pipe.hset(keys.org_usage(tenant), mapping=_usage_fields(usage))
        for tenant in stale:
            pipe.hmget(keys.org_usage(tenant), list(_FIELDS))
        try:
            replies = pipe.execute()
        except redis.RedisError:
            with self._lock:
                for tenant, usage in pending.items():
                    self._pending.setdefault(tenant, usage)  # unless a newer one came meanwhile
            raise
        with self._lock:
            for tenant, raw in zip(stale, replies[len(pending):], strict=True):
                seen = self._seen.get(tenant)
                if seen is None or seen[0] <= now:  # a response since the snapshot knows better
                    self._seen[tenant] = (now, OrgUsage.parse(raw))

    def close(self) -> None:
        """Stop the background thread and write what is left (a worker process shutting down)."""
        self._stop.set()
        with self._lock:
            self._asked.clear()
        self.refresh()

    def _start_worker(self) -> None:
        # Under self._lock. A thread inherited across fork is not alive in the child: it starts its own.
        if self.background and (self._worker is None or not self._worker.is_alive()):
            self._worker = threading.Thread(target=self._run, name="org-usage", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while not self._stop.wait(self.max_age):
            try:
                self.refresh()
            except redis.RedisError as exc:
                log.warning("org_usage_refresh_failed", error=f"{type(exc).__name__}: {exc}")


def _usage_fields(usage: OrgUsage) -> dict[str, float]:
    return {"used": usage.used, "max": usage.max, "at": usage.at}


class MeteringObserver(Protocol):
    """Hooks around each metered request (metrics and notifications plug in here)."""

    def after_request(self, event: RequestEvent) -> None: ...


class MeteredSession(requests.Session):
    """A ``requests.Session`` that pays one credit from ``tenant``'s bucket before each counted request.

    An ``essential`` session (an essential job's) may spend the reserve the tenant keeps for essential work; a
    normal one is refused once only the reserve is left.
    """

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
        timeout: float = WorkerSettings.request_timeout,
        essential: bool = False,
    ) -> None:
        super().__init__()
        self.tenant = tenant
        self.bucket = bucket
        self.essential = essential
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
        grant = self.bucket.take(self.tenant, 1, essential=self.essential)
        if not grant.granted:
            # A refusal with credits left (only the reserve, for a normal take) parks only normal jobs.
            raise QuotaExhausted(self.tenant, remaining=grant.remaining, limit=grant.limit,
                                 resets_at=grant.resets_at if grant.limit else None, reserve=grant.reserve)
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
