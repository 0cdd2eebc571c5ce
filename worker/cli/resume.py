"""``crmsync resume``: resume a paused tenant now and queue its parked jobs again."""

from __future__ import annotations

import argparse

from quota.validation import validate_tenant
from worker.cli import Subcommands, add_command
from worker.cli.bucket import connect_bucket
from worker.jobs.resume import Resumer, send_parked
from worker.jobs.runtime import Runtime, notification_center
from worker.jobs.sink import JsonlSink

__all__ = ["register"]


def _cmd_resume(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    bucket = connect_bucket()
    runtime = Runtime(redis=bucket.redis, sink=JsonlSink("."), notifier=notification_center())
    pauses = runtime.pauses
    if pauses.get(args.tenant) is None and pauses.parked_count(args.tenant) == 0:
        print(f"{args.tenant}: not paused, nothing parked")
        return 0
    resumer = Resumer(bucket.redis, bucket, pauses, send_parked, runtime.notifier)
    sent = resumer.resume(args.tenant, by="cli")
    print(f"{args.tenant}: resumed, {sent} parked jobs queued again")
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``resume`` command."""
    resume = add_command(commands, "resume")
    resume.add_argument("tenant")
    resume.set_defaults(handler=_cmd_resume)
