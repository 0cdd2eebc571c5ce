"""``crmsync scheduler``: queue the scheduled pulls until SIGTERM or SIGINT (run two for availability)."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from quota.errors import InvalidInput
from worker.broker.health import require_broker
from worker.cli import Subcommands, add_command
from worker.cli.support import redis_client
from worker.logs import configure_logging
from worker.scheduling.scheduler import DEFAULT_LEASE_TTL_S, DEFAULT_TICK_S, Scheduler

__all__ = ["register"]


def _cmd_scheduler(args: argparse.Namespace) -> int:
    if not args.tick > 0:
        raise InvalidInput(f"invalid --tick {args.tick}: a positive number of seconds")
    configure_logging()
    require_broker()  # exit 2 with one line if the broker is misconfigured, unreachable or refuses the login
    scheduler = Scheduler(redis_client(), instance_id=args.instance_id, tick_s=args.tick, lease_ttl_s=args.lease_ttl)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()  # run() wakes from its wait, releases the lease and returns

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scheduler.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        scheduler.redis.close()
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``scheduler`` command."""
    scheduler = add_command(commands, "scheduler")
    scheduler.add_argument("--tick", type=float, default=DEFAULT_TICK_S, metavar="SECONDS",
                           help=f"seconds between passes (default {DEFAULT_TICK_S:g})")
    scheduler.add_argument("--lease-ttl", type=float, default=DEFAULT_LEASE_TTL_S, metavar="SECONDS",
                           help="seconds another scheduler waits to take over from one that died "
                                f"(default {DEFAULT_LEASE_TTL_S:g}; at least twice --tick)")
    scheduler.add_argument("--instance-id", help="this instance's name in the lease (default host:pid:random)")
    scheduler.set_defaults(handler=_cmd_scheduler)
