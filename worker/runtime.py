"""What a worker process shares across its jobs: Redis, the bucket, connections, cached tokens, the sink."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import redis

from quota.bucket import CreditBucket
from quota.settings import redis_url
from worker.connections import Connection, ConnectionStore
from worker.jobstate import JobStore
from worker.metering import MeteredSession, MeteringObserver
from worker.notify import LogNotifier, Notifier
from worker.oauth import TokenClient
from worker.retry import RetryPolicy
from worker.salesforce import CachedTokens, TenantSalesforce
from worker.sink import JsonlSink, Sink

__all__ = ["DEFAULT_DATA_DIR", "Runtime", "data_dir", "get_runtime"]

DEFAULT_DATA_DIR = "var/data"


def data_dir() -> Path:
    """``CRMSYNC_DATA_DIR``: where the default sink writes pulled records."""
    return Path(os.environ.get("CRMSYNC_DATA_DIR") or DEFAULT_DATA_DIR)


@dataclass
class Runtime:
    """One per worker process; every job's Salesforce client is built from it."""

    redis: redis.Redis
    sink: Sink
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    notifier: Notifier = field(default_factory=LogNotifier)
    observers: tuple[MeteringObserver, ...] = ()
    _tokens: dict[tuple[str, str], CachedTokens] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bucket(self) -> CreditBucket:
        """The credit bucket on this runtime's Redis."""
        return CreditBucket(self.redis)

    @property
    def connections(self) -> ConnectionStore:
        """Tenants' Salesforce connections."""
        return ConnectionStore(self.redis)

    @property
    def jobs(self) -> JobStore:
        """Job states and outcomes."""
        return JobStore(self.redis)

    def salesforce(self, tenant: str) -> tuple[TenantSalesforce, Connection]:
        """A metered Salesforce client for ``tenant`` with a fresh session (so a job's charges are its own)."""
        connection = self.connections.get(tenant)
        with self._lock:
            key = (tenant, connection.connection_id)
            tokens = self._tokens.get(key)
            if tokens is None:
                tokens = self._tokens[key] = CachedTokens(TokenClient(connection))
        session = MeteredSession(tenant, self.bucket, observers=self.observers)
        session.verify = connection.ca_bundle or True
        return TenantSalesforce(tenant, session=session, tokens=tokens, policy=self.policy), connection


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _runtime  # noqa: PLW0603 (one per process, shared by the worker threads)
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(
                redis=redis.Redis.from_url(redis_url()), sink=JsonlSink(data_dir()), policy=RetryPolicy.from_env()
            )
        return _runtime
