"""``crmsync worker``: run the Dramatiq workers (``dramatiq worker.app``)."""

from __future__ import annotations

import argparse
import os
import sys

from worker.cli import Subcommands, add_command
from worker.metrics.multiprocess import prepare_multiproc_dir

__all__ = ["register"]


def _cmd_worker(args: argparse.Namespace) -> int:
    # A thin wrapper: the dramatiq CLI does process management, signals and reloads.
    command = [sys.executable, "-m", "dramatiq", "worker.app", "--processes", str(args.processes),
               "--threads", str(args.threads)]
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
