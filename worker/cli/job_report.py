"""What ``crmsync sync`` and ``crmsync push`` share: ``--priority``, ``--wait`` and its options, and the job's
outcome."""

from __future__ import annotations

import argparse
import json
import sys

import redis

from worker.enqueue import wait_for
from worker.jobs.state import JobRecord

__all__ = ["EXIT_PARKED", "add_priority_option", "add_wait_options", "report"]

EXIT_PARKED = 3


def add_priority_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--priority`` (checked where the job is queued, so a bad value is refused before anything is written)."""
    parser.add_argument("--priority", default="normal", metavar="essential|normal",
                        help="essential jobs may spend the tenant's reserve; normal jobs stop before it "
                             "(default normal)")


def add_wait_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--wait``, ``--timeout`` and ``--json``."""
    parser.add_argument("--wait", action="store_true", help="block until the job ends and print its outcome")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    parser.add_argument("--json", action="store_true", help="with --wait: print the outcome as JSON")


def report(client: redis.Redis, tenant: str, job_id: str, args: argparse.Namespace) -> int:
    """Print the queued job's id, or with ``--wait`` its outcome; return the command's exit code."""
    if not args.wait:
        print(job_id)
        return 0
    record = wait_for(client, tenant, job_id, timeout=args.timeout)
    if record is None:
        print(f"job {job_id}: unknown", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(record.to_dict()))
    else:
        print(_summary(record))
    return {"done": 0, "parked": EXIT_PARKED}.get(record.state, 1)


def _summary(record: JobRecord) -> str:
    text = (f"job {record.job_id}: {record.state} - {record.priority} {record.kind} {record.tenant}/{record.sobject}, "
            f"{record.records:,} records, {record.credits:,} credits")
    if record.failed_records:
        text += f", {record.failed_records:,} records refused (see --json for each error)"
    if record.error:
        text += f"\n  {record.error}"
    return text
