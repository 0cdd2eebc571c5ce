"""The /metrics endpoint: per-tenant gauges and Redis's eviction policy from Redis, plus the worker pool's summed
metrics.

It uses a registry of its own, not prometheus-client's default one: in multiprocess mode the default
registry would report this process's own (empty) copies of the worker instruments beside the summed ones.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from quota.bucket import Clock
from worker.metrics.collector import RedisPolicyCollector, TenantCollector
from worker.metrics.multiprocess import WorkerMetricsCollector

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MetricsServer", "build_registry", "scrape", "serve"]

DEFAULT_PORT = 9464
DEFAULT_HOST = "127.0.0.1"


def build_registry(
    client: redis.Redis | None,
    multiproc_dir: str | os.PathLike[str] | None,
    *,
    clock: Clock | None = None,
) -> CollectorRegistry:
    """A registry with the tenant gauges and Redis's ``maxmemory-policy`` (when ``client`` is given) and the worker
    metrics in ``multiproc_dir``.

    Run the tenant gauges in one place per cluster (they are the same everywhere) and the worker metrics on
    every host that runs workers (their files are local to the host); ``None`` leaves either out.
    """
    registry = CollectorRegistry(auto_describe=False)
    if client is not None:
        registry.register(TenantCollector(client, clock=clock))
        registry.register(RedisPolicyCollector(client))
    if multiproc_dir is not None:
        registry.register(WorkerMetricsCollector(multiproc_dir))
    return registry


def scrape(registry: CollectorRegistry) -> str:
    """The registry in the Prometheus text format, as a scrape would get it."""
    return generate_latest(registry).decode("utf-8")


@dataclass
class MetricsServer:
    """A running /metrics HTTP server; ``port`` is the bound one (useful when asked for port 0)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The metrics URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(registry: CollectorRegistry, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread (threaded: scrapes may overlap)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
