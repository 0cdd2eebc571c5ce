"""The ``crmsync`` command: one entry point, each area of the system registering its own subcommands.

Bad input never shows a traceback: an ``InvalidInput`` (or any ``ValueError`` raised on purpose by a
handler) exits 2 with a one-line reason on stderr; an unreachable Redis exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from quota.errors import InvalidInput, QuotaUnavailable
from worker.errors import EXIT_FAILURE, EXIT_USAGE, CommandError

__all__ = ["CommandError", "main"]


def _registrars() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    # Imported here so `crmsync --help` stays fast and each area owns its own commands.
    from emulator.cli import register as emulator_commands  # noqa: PLC0415
    from worker.cli.connect import register as connection_commands  # noqa: PLC0415
    from worker.cli.jobs import register as job_commands  # noqa: PLC0415
    from worker.cli.metrics import register as metrics_commands  # noqa: PLC0415
    from worker.cli.notify import register as notification_commands  # noqa: PLC0415
    from worker.cli.quota import register as quota_commands  # noqa: PLC0415
    from worker.cli.schedule import register as schedule_commands  # noqa: PLC0415
    from worker.cli.status import register as status_commands  # noqa: PLC0415
    from worker.devstack.run import register as run_commands  # noqa: PLC0415

    return [run_commands, status_commands, quota_commands, connection_commands, job_commands,
            schedule_commands, notification_commands, metrics_commands, emulator_commands]


def build_parser() -> argparse.ArgumentParser:
    """The full ``crmsync`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="crmsync",
        description="Sync Salesforce orgs while metering every API call against a daily credit quota.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``crmsync`` with ``argv`` and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except (InvalidInput, CommandError) as exc:
        print(f"crmsync: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except QuotaUnavailable as exc:
        print(f"crmsync: error: {exc} (is REDIS_URL right?)", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
