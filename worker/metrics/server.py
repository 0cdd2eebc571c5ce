"""The /metrics endpoint: per-tenant gauges and Redis's eviction policy from Redis, plus the worker pool's summed
metrics.

``Exposition`` is what one endpoint serves: a prometheus-client registry of its own (not the default one: in
multiprocess mode that would report this process's own, empty, copies of the worker instruments beside the
summed ones) with the worker metrics and the eviction policy, and the tenant gauges, which are written as
exposition lines directly (``TenantScrape.render``) because at 100,000 tenants prometheus-client's sample
objects cost more than reading Redis. The HTTP server is prometheus-client's threaded WSGI server with an app of
ours: the text format (or OpenMetrics, when asked for), gzip when accepted (level 1: a 100,000-tenant scrape is
about 80 MB of text, which the default level takes seconds to compress), and ``name[]`` to ask for some families
only.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric

from quota.bucket import Clock
from worker.metrics.collector import META_GAUGES, TENANT_GAUGES, RedisPolicyCollector, TenantCollector, family
from worker.metrics.multiprocess import WorkerMetricsCollector
from worker.metrics.reads import Client, Shard

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Exposition", "MetricsServer", "build_registry", "scrape", "serve"]

DEFAULT_PORT = 9464
DEFAULT_HOST = "127.0.0.1"

_GZIP_LEVEL = 1
_EOF = "# EOF\n"
Encoder = Callable[[Any], bytes]


class _Fixed:
    """A collector of given families, so an encoder writes their ``# HELP``/``# TYPE`` lines."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


@dataclass
class Exposition:
    """What one /metrics endpoint serves: ``registry`` (prometheus-client collectors) and, if set, ``tenants``."""

    registry: CollectorRegistry
    tenants: TenantCollector | None = None
    _headers: dict[Any, dict[str, str]] = field(default_factory=dict)

    def render(self, accept: str = "", names: Iterable[str] | None = None) -> tuple[bytes, str]:
        """The body and its content type for a request's ``Accept`` header (the text format unless OpenMetrics is
        asked for); ``names`` limits it to those families."""
        encoder, content_type = choose_encoder(accept)
        wanted = None if names is None else list(names)
        registry = self.registry if wanted is None else self.registry.restricted_registry(wanted)
        body = encoder(registry).decode("utf-8")
        if self.tenants is None:
            return body.encode("utf-8"), content_type
        tenants = self.tenants.scrape().render(self._header(encoder, content_type), wanted)
        if body.endswith(_EOF):  # OpenMetrics ends with "# EOF": the tenant families go before it
            return (body[:-len(_EOF)] + tenants + _EOF).encode("utf-8"), content_type
        return (body + tenants).encode("utf-8"), content_type

    def _header(self, encoder: Encoder, content_type: str) -> Callable[[str], str]:
        """``name -> its # HELP and # TYPE lines`` as ``encoder`` writes them, computed once per format."""
        headers = self._headers.get(content_type)
        if headers is None:
            headers = {}
            for name in (*TENANT_GAUGES, *META_GAUGES):
                text = encoder(_Fixed([family(name)])).decode("utf-8")
                headers[name] = text[:-len(_EOF)] if text.endswith(_EOF) else text
            self._headers[content_type] = headers
        return headers.__getitem__


def build_registry(
    client: Client | None,
    multiproc_dir: str | os.PathLike[str] | None,
    *,
    clock: Clock | None = None,
    shard: Shard | None = None,
) -> Exposition:
    """The tenant gauges and Redis's ``maxmemory-policy`` (when ``client`` is given) and the worker metrics in
    ``multiproc_dir``.

    Run the tenant gauges in one place per cluster (they are the same everywhere), or one place per ``shard``
    (each reports its shard's tenants; only shard 0 reports the eviction policy, one series per Redis), and the
    worker metrics on every host that runs workers (their files are local to the host); ``None`` leaves either
    out.
    """
    registry = CollectorRegistry(auto_describe=False)
    tenants = None
    if client is not None:
        shard = shard or Shard()
        tenants = TenantCollector(client, clock=clock, shard=shard)
        if shard.first:
            registry.register(RedisPolicyCollector(client))
    if multiproc_dir is not None:
        registry.register(WorkerMetricsCollector(multiproc_dir))
    return Exposition(registry, tenants)


def scrape(exposition: Exposition) -> str:
    """The endpoint's body in the Prometheus text format, as a scrape would get it."""
    return exposition.render()[0].decode("utf-8")


def _app(exposition: Exposition) -> Callable[..., list[bytes]]:
    """The WSGI app: ``GET`` any path but ``/favicon.ico`` answers the metrics, as prometheus-client's does."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]] = []
        if method == "OPTIONS":
            status, headers, body = "200 OK", [("Allow", "OPTIONS,GET")], b""
        elif method != "GET":
            status, headers = "405 Method Not Allowed", [("Allow", "OPTIONS,GET")]
            body = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        elif environ.get("PATH_INFO") == "/favicon.ico":
            status, body = "200 OK", b""
        else:
            params = parse_qs(environ.get("QUERY_STRING", ""))
            body, content_type = exposition.render(environ.get("HTTP_ACCEPT", ""), params.get("name[]"))
            status, headers = "200 OK", [("Content-Type", content_type)]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
                headers.append(("Content-Encoding", "gzip"))
        start_response(status, headers)
        return [body]

    return app


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


def serve(exposition: Exposition, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> MetricsServer:
    """Serve ``exposition`` on ``http://host:port/metrics`` from a daemon thread (threaded: scrapes may overlap)."""
    family_of, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        """The threaded server, on the address family of ``host`` (IPv4 or IPv6)."""

        address_family = family_of

    httpd = make_server(host, port, _app(exposition), Server, handler_class=_SilentHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)

