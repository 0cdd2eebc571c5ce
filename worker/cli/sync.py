"""``crmsync sync``: queue an incremental pull of one object for a tenant."""

from __future__ import annotations

import argparse

from worker.cli import Subcommands, add_command
from worker.cli.job_report import add_priority_option, add_wait_options, report, wait_options
from worker.cli.support import cli_redis
from worker.enqueue import enqueue_pull

__all__ = ["register"]


def _cmd_sync(args: argparse.Namespace) -> int:
    options = wait_options(args)
    fields = [f for f in args.fields.split(",") if f] if args.fields else []
    with cli_redis("Redis") as client:
        job_id = enqueue_pull(client, args.tenant, args.object, fields, priority=args.priority)
        return report(client, args.tenant, job_id, options)


def register(commands: Subcommands) -> None:
    """Add the ``sync`` command."""
    sync = add_command(commands, "sync")
    sync.add_argument("tenant")
    sync.add_argument("object", help="sObject API name, e.g. Lead (in any case: LEAD is Lead)")
    sync.add_argument("--fields", help="comma-separated fields to pull (Id and SystemModstamp are always pulled)")
    add_priority_option(sync)
    add_wait_options(sync)
    sync.set_defaults(handler=_cmd_sync)
