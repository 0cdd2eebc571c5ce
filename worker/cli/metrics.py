"""``crmsync metrics``: serve /metrics with the per-tenant gauges and the worker pool's metrics.

``--shard I/N`` serves only the tenants of shard I of N (a stable hash of the tenant id, ``worker.metrics.reads``),
for N instances that share the tenants between them; only shard 0 reports what is not per tenant (Redis's
eviction policy, and the worker metrics if it is given their directory), so that nothing is counted N times."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from quota.connection import RedisClient, connect_checked
from worker.cli import Subcommands, add_command
from worker.cli import main as crmsync
from worker.errors import CommandError
from worker.metrics.multiprocess import ENV
from worker.metrics.reads import Shard
from worker.metrics.server import DEFAULT_HOST, DEFAULT_PORT, build_registry, serve
from worker.settings import multiproc_dir, redis_url

__all__ = ["main", "register"]

_REDIS_TIMEOUT_S = 3.0


def _shard(spec: str | None) -> Shard:
    try:
        return Shard() if spec is None else Shard.parse(spec)
    except ValueError as exc:
        raise CommandError(f"--shard: {exc}") from None


def _cmd_metrics(args: argparse.Namespace) -> int:
    shard = _shard(args.shard)
    if args.shard is not None and args.no_tenants:
        raise CommandError("--shard splits the tenant gauges: it cannot go with --no-tenants")
    if not shard.first and args.multiproc_dir is not None:
        raise CommandError(f"--shard {shard}: only shard 0 serves worker metrics (N shards would count them N "
                           "times): leave out --multiproc-dir, or serve them from --no-tenants instances")
    client: RedisClient | None = None
    if not args.no_tenants:
        # Timeouts and no retries, so a scrape while Redis hangs answers (with crmsync_tenant_scrape_success 0)
        # within Prometheus's default 10 s scrape timeout. A Redis that is not what REDIS_URL names (cluster or
        # not, slots unserved) stops the command at start: one line, exit 2.
        client = connect_checked(redis_url(), socket_connect_timeout=_REDIS_TIMEOUT_S,
                                 socket_timeout=_REDIS_TIMEOUT_S, retry=None)
    # Worker metrics are one set per host, not per tenant: of N shards only shard 0 may serve them.
    directory = (args.multiproc_dir or multiproc_dir()) if shard.first else None
    if directory is not None:
        # The worker pool may start after us; its files appear here then (it empties the directory, never
        # removes it).
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    server = serve(build_registry(client, directory, shard=shard), args.host, args.port)
    worker_part = (f"worker metrics from {directory}" if directory else f"no worker metrics ({ENV} unset)"
                   if shard.first else "no worker metrics: shard 0 serves them")
    tenant_part = "off" if client is None else "on" if shard.count == 1 else f"on, shard {shard}"
    print(f"serving {server.url} (tenant gauges {tenant_part}; {worker_part})", flush=True)

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        stop.wait()
    finally:
        server.close()
        if client is not None:
            client.close()
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``metrics`` command."""
    metrics = add_command(commands, "metrics")
    metrics.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    metrics.add_argument("--port", type=int, default=DEFAULT_PORT,
                         help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    metrics.add_argument("--multiproc-dir", type=Path, default=None,
                         help=f"worker pool's metrics directory (default ${ENV}; unset: no worker metrics)")
    metrics.add_argument("--no-tenants", action="store_true",
                         help="leave out the per-tenant gauges (serve them from one instance per cluster)")
    metrics.add_argument("--shard", metavar="I/N", default=None,
                         help="serve only the tenants of shard I of N (0 <= I < N), by a stable hash of the tenant "
                              "id, for N instances that share the tenants; only shard 0 reports Redis's eviction "
                              "policy and worker metrics")
    metrics.set_defaults(handler=_cmd_metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.cli.metrics ARGS``: ``crmsync metrics ARGS``."""
    return crmsync(["metrics", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
