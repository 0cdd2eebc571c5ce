"""``crmsync run``: the whole system on embedded defaults with a live view (``make run``).

What it does is in ``worker.devstack.run``; this module holds its options.
"""

from __future__ import annotations

from worker.cli import Subcommands, add_command
from worker.devstack.run import run

__all__ = ["register"]


def register(commands: Subcommands) -> None:
    """Add the ``run`` command."""
    parser = add_command(commands, "run")
    parser.add_argument("--demo", action="store_true", help="set up the emulator demo even if tenants are connected")
    parser.add_argument("--headless", action="store_true", help="print status lines instead of the live view")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--metrics-port", type=int, default=9464,
                        help="port of the metrics endpoint (0: a free one)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    parser.add_argument("--var-dir", default="var", help="where data, logs and run files go (default ./var)")
    parser.set_defaults(handler=run)
