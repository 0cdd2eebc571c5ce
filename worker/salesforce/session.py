"""The one place every Salesforce request passes through: a credit first, then the request.

simple-salesforce is handed a ``MeteredSession``. Its ``send`` sees every HTTP request simple-salesforce
makes (each query page, each retry), takes one credit from the tenant's bucket for each one Salesforce counts,
refunds the credit only when the request provably never left, and records the org's own usage from the
``Sforce-Limit-Info`` header.

Proof that a request never left comes from the connections themselves: the session's connections note, per
thread, when they start connecting and when they write the request's first byte. A request whose connect
was refused or timed out, or whose TLS handshake failed, wrote nothing, so Salesforce cannot have counted it;
any failure after the first byte (a reset, a read timeout, a TLS error while reading the answer) may have
been counted, and stays charged.

Redirects are never followed: a 3xx answer with a ``Location`` raises ``UnsafeRequest`` (its own request stays
charged). Salesforce's REST API answers requests itself, so a redirect means the instance moved or something
in between rewrites traffic; following it could spend credits Salesforce counts for each hop, or carry the
bearer token to another host. Once bound to the tenant's instance (``bind``), the session also refuses to send
anything to any other host.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import redis
import requests
import requests.adapters
import structlog
import urllib3
import urllib3.connection

from quota.bucket import CreditBucket, Grant
from quota.errors import QuotaExhausted
from worker import keys
from worker.errors import OrgLimitExceeded, UnsafeRequest
from worker.settings import WorkerSettings

__all__ = [
    "MeteredSession",
    "MeteringObserver",
    "OrgUsage",
    "OrgUsageCache",
    "RequestEvent",
    "is_metered",
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


class _Wire(threading.local):
    """What the request in flight on this thread did on the wire, as the session's connections report it."""

    connected: bool = False  # one of our connections started connecting or sending for it
    wrote: bool = False  # a byte of it was handed to the socket


_wire = _Wire()


class _WatchedConnection(urllib3.connection.HTTPConnection):
    """Reports to ``_wire`` when it starts connecting and when it writes. Every byte of a request (line, headers,
    body) goes through ``send``; a new HTTPS connection is connected (TCP and TLS) before it, a plain one on it."""

    def connect(self) -> None:
        """Connect, noting that the request got as far as a connection of ours."""
        _wire.connected = True
        super().connect()

    def send(self, data: Any) -> None:
        """Write ``data``, noting first that the request may now reach the server."""
        _wire.connected = True
        if self.sock is None:  # http.client connects on the first write: a failed connect has written nothing
            self.connect()
        _wire.wrote = True
        super().send(data)


class _WatchedHTTPSConnection(_WatchedConnection, urllib3.connection.HTTPSConnection):
    """An HTTPS connection that reports to ``_wire``."""


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter on connections that report to ``_wire``. Through a proxy, connections are the proxy
    manager's own and report nothing: no refund is proven there, the credit stays charged."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """requests' pool manager, making our connection pools."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of ``url``; ``None`` when it carries user info or has no host or a bad port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or "@" in parts.netloc or parts.scheme not in ("https", "http"):
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _host(url: str) -> str:
    """Where ``url`` points, for messages: scheme, host and port, never a path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"[:120] if parts.netloc else repr(url[:80])


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
        self.instance: tuple[str, str, int] | None = None  # set by bind: the only place requests may go
        for prefix in ("https://", "http://"):
            self.mount(prefix, _WatchedAdapter())

    def bind(self, instance_url: str) -> None:
        """From now on send requests only to ``instance_url``'s host and port (the tenant's instance, as its
        access token names it); raises ``UnsafeRequest`` for an instance URL that is not plain ``https://host``."""
        origin = _origin(instance_url)
        if origin is None or origin[0] != "https":
            raise UnsafeRequest(f"the access token of tenant {self.tenant!r} names an instance URL that is not "
                                f"https://host[:port]: {_host(instance_url)}")
        self.instance = origin

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        """Let a CA bundle set on the session win over ``REQUESTS_CA_BUNDLE`` (requests prefers the environment)."""
        if verify is None and self.verify is not True:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request``, paying for it first when Salesforce counts it. Refuses (``UnsafeRequest``) a request
        off the bound instance, before any credit, and a redirect, after its credit."""
        url = request.url or ""
        if self.instance is not None and _origin(url) != self.instance:
            raise UnsafeRequest(f"refused to send a request of tenant {self.tenant!r} to {_host(url)}: "
                                "not its Salesforce instance")
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        kwargs["allow_redirects"] = False
        response = self.send_metered(request, **kwargs) if is_metered(url) else super().send(request, **kwargs)
        if response.is_redirect:
            response.close()
            target = _host(urljoin(url, response.headers["Location"]))
            raise UnsafeRequest(f"Salesforce answered {response.status_code} redirecting to {target}; redirects are "
                                "not followed (a moved instance is reached with a new access token)")
        return response

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
        _wire.connected = _wire.wrote = False
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException:
            # Provably never left: a connection of ours was on it and wrote not one byte of it.
            never_sent = _wire.connected and not _wire.wrote
            refunded = never_sent and self.bucket.refund(self.tenant, 1, grant=grant) == 1
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
