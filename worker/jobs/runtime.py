"""What a worker process shares across its jobs: Redis, the bucket, connections, cached tokens, the sink."""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import redis

from quota.bucket import Clock, CreditBucket
from quota.connection import connect
from worker.jobs.bulk import BulkOptions
from worker.jobs.cost import BulkMode, PollSchedule
from worker.jobs.parking import PauseStore
from worker.jobs.sink import JsonlSink, Sink
from worker.jobs.state import JobStore
from worker.metrics.observers import MetricsObserver
from worker.notifications import NotificationCenter
from worker.notifications.notifier import Notifier
from worker.notifications.quota_warnings import QuotaAlerts
from worker.salesforce.bulk_budget import BulkBudgets
from worker.salesforce.client import CachedTokens, TenantSalesforce
from worker.salesforce.connections import Connection, ConnectionStore
from worker.salesforce.oauth import TokenClient
from worker.salesforce.retry import RetryPolicy
from worker.salesforce.session import MeteredSession, MeteringObserver, OrgUsageCache
from worker.settings import WorkerSettings, redis_url

__all__ = ["Runtime", "SessionFactory", "get_runtime", "metered_session", "notification_center",
           "use_bucket_clock", "use_session_factory"]

# Builds the session a job's Salesforce requests go through: (runtime, tenant, object label) -> session.
SessionFactory = Callable[["Runtime", str, str], MeteredSession]


def metered_session(runtime: Runtime, tenant: str, sobject: str) -> MeteredSession:
    """The product's session: a credit from the tenant's bucket before each counted request, the org's usage
    checked and recorded, every request reported to the runtime's observers and quota warnings."""
    return MeteredSession(tenant, runtime.bucket, sobject=sobject, observers=runtime.observers,
                          org_pause_share=runtime.org_pause_share, org_usage=runtime.org_usage,
                          on_grant=runtime.quota_alerts.after_take, timeout=runtime.settings.request_timeout)


@dataclass
class Runtime:
    """One per worker process; every job's Salesforce client is built from it."""

    redis: redis.Redis
    sink: Sink
    notifier: Notifier
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    observers: tuple[MeteringObserver, ...] = ()
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    session_factory: SessionFactory = metered_session
    bucket_clock: Clock | None = None  # None: the Redis server's clock, as in production
    _tokens: dict[tuple[str, str], CachedTokens] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def bucket(self) -> CreditBucket:
        """The credit bucket on this runtime's Redis: one per runtime, so each worker thread keeps its
        metering connection from job to job."""
        return CreditBucket(self.redis, clock=self.bucket_clock)

    @property
    def connections(self) -> ConnectionStore:
        """Tenants' Salesforce connections."""
        return ConnectionStore(self.redis)

    def __post_init__(self) -> None:
        self.quota_alerts = QuotaAlerts(self.notifier, self.settings.quota_warning_shares)
        self.org_pause_share = self.settings.org_pause_share
        self.org_usage = OrgUsageCache(self.redis, urgent_share=self.org_pause_share)

    @property
    def pauses(self) -> PauseStore:
        """Paused tenants and parked jobs."""
        return PauseStore(self.redis)

    @property
    def jobs(self) -> JobStore:
        """Job states and outcomes."""
        return JobStore(self.redis)

    def probe_org(self, tenant: str, *, essential: bool = False) -> float | None:
        """A metered ``/limits`` call: the org's API usage as a share of its daily max (None if unknown).

        It bypasses the org guard (that is the point of probing) but still pays its credit, from the reserve
        when ``essential``.
        """
        sf, _ = self.salesforce(tenant, "limits", essential=essential)
        sf.session.org_pause_share = None
        limits: Any = sf.call(lambda s: s.restful("limits/"), what="limits")
        daily = limits.get("DailyApiRequests", {}) if isinstance(limits, dict) else {}
        maximum, remaining = daily.get("Max"), daily.get("Remaining")
        if not isinstance(maximum, int) or not isinstance(remaining, int) or maximum <= 0:
            return None
        return (maximum - remaining) / maximum

    def tokens(self, connection: Connection) -> CachedTokens:
        """The access tokens of ``connection``, cached for this process (a new connection gets new ones)."""
        with self._lock:
            key = (connection.tenant, connection.connection_id)
            tokens = self._tokens.get(key)
            if tokens is None:
                tokens = self._tokens[key] = CachedTokens(TokenClient(connection))
            return tokens

    def salesforce(self, tenant: str, sobject: str = "", *,
                   essential: bool = False) -> tuple[TenantSalesforce, Connection]:
        """A metered Salesforce client for ``tenant`` with a fresh session (so a job's charges are its own);
        ``sobject`` labels its requests in metrics; an ``essential`` session may spend the tenant's reserve."""
        connection = self.connections.get(tenant)
        tokens = self.tokens(connection)
        session = self.session_factory(self, tenant, sobject)
        session.verify = connection.ca_bundle or True
        session.essential = essential
        return TenantSalesforce(tenant, session=session, tokens=tokens, policy=self.policy), connection

    def bulk_options(self, tenant: str) -> BulkOptions:
        """How ``tenant``'s jobs may use Bulk API 2.0: ``CRMSYNC_BULK``, the poll schedule (sleeping with the
        retry policy's sleep, so tests inject it), and the org's Bulk budgets."""
        return BulkOptions(mode=cast(BulkMode, self.settings.bulk),
                           schedule=PollSchedule(self.settings.bulk_poll_seconds), sleep=self.policy.sleep,
                           budgets=BulkBudgets(self.redis, tenant, self.notifier))


def notification_center() -> NotificationCenter:
    """Notifications on their own Redis client: short timeouts and no retries, so a Redis outage delays a
    job by a second at most on their account, never by redis-py's retry schedule."""
    # connect() gives a RedisCluster for a cluster URL: it serves the same one-slot commands.
    client = cast(redis.Redis, connect(redis_url(), socket_connect_timeout=1, socket_timeout=1, retry=None))
    return NotificationCenter(client)


def _close_org_usage(cache: OrgUsageCache) -> None:
    # A worker shutting down leaves the org usage it last saw in Redis, if Redis is there to take it.
    with contextlib.suppress(redis.RedisError):
        cache.close()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
_session_factory: SessionFactory = metered_session
_bucket_clock: Clock | None = None


def use_bucket_clock(clock: Clock) -> None:
    """Build this process's runtime with a bucket on ``clock`` instead of the Redis server's; call it before the
    first job. The seam of the end-to-end tests, which move a rolling window's time in real worker processes:
    the product always meters on the server's clock."""
    global _bucket_clock  # noqa: PLW0603 (read once, when get_runtime builds the runtime)
    _bucket_clock = clock


def use_session_factory(factory: SessionFactory) -> None:
    """Build this process's runtime with ``factory`` for its jobs' sessions; call it before the first job.

    The seam of the jobs benchmark, whose worker app sends some tenants' requests unmetered: the product
    itself has no switch to turn metering off.
    """
    global _session_factory  # noqa: PLW0603 (read once, when get_runtime builds the runtime)
    _session_factory = factory


def get_runtime() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _runtime  # noqa: PLW0603 (one per process, shared by the worker threads)
    with _runtime_lock:
        if _runtime is None:
            settings = WorkerSettings.from_env()
            _runtime = Runtime(
                redis=cast(redis.Redis, connect(redis_url(), socket_connect_timeout=10, socket_timeout=30)),
                sink=JsonlSink(settings.data_dir), policy=RetryPolicy.from_settings(settings), settings=settings,
                notifier=notification_center(), observers=(MetricsObserver.from_env(),),
                session_factory=_session_factory, bucket_clock=_bucket_clock,
            )
            atexit.register(_close_org_usage, _runtime.org_usage)
        return _runtime
