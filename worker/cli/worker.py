"""``crmsync worker``: run the Dramatiq workers (``dramatiq worker.app``)."""

from __future__ import annotations

import argparse
import os
import sys

import redis
import structlog

from quota.scripts import METER
from worker.broker.health import require_broker
from worker.cli import Subcommands, add_command
from worker.cli.support import redis_client
from worker.eviction import eviction_warning, maxmemory_policy
from worker.logs import configure_logging
from worker.metrics.multiprocess import prepare_multiproc_dir

__all__ = ["register"]

log = structlog.get_logger("crmsync.worker")


def _check_redis() -> None:
    """Before the pool starts: warn (event ``redis_may_evict``) when Redis may evict credit windows, naming its
    ``maxmemory-policy``; and load the metering script, which the read-only ``metrics`` ACL user may not load
    itself (after a Redis restart or failover its cache is empty). An unreachable Redis is logged, not fatal:
    the workers wait for it."""
    client = redis_client()
    try:
        policy = maxmemory_policy(client)
        warning = eviction_warning(policy)
        if warning:
            log.warning("redis_may_evict", policy=policy, detail=warning)
        client.script_load(METER.source)
    except redis.RedisError as exc:
        log.warning("redis_check_failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        client.close()


def _cmd_worker(args: argparse.Namespace) -> int:
    # A thin wrapper: the dramatiq CLI does process management, signals and reloads.
    command = [sys.executable, "-m", "dramatiq", "worker.app", "--processes", str(args.processes),
               "--threads", str(args.threads)]
    configure_logging()
    # A bad BROKER_URL, a broker that cannot be reached or refuses the login: exit 2 with one line, no pool.
    require_broker()
    _check_redis()
    # Parent only, before Dramatiq forks: create and empty $PROMETHEUS_MULTIPROC_DIR (no-op when unset).
    prepare_multiproc_dir()
    # Idle consumers poll this often (Dramatiq's default is 1 s): resumed jobs start within the second.
    os.environ.setdefault("dramatiq_worker_timeout", "200")
    os.execv(sys.executable, command)  # noqa: S606 (our own interpreter, a fixed argument list)


def register(commands: Subcommands) -> None:
    """Add the ``worker`` command."""
    worker = add_command(commands, "worker")
    worker.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="worker processes")
    worker.add_argument("--threads", type=int, default=4, help="threads per process")
    worker.set_defaults(handler=_cmd_worker)
