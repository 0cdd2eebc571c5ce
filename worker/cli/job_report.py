"""What ``crmsync sync`` and ``crmsync push`` share: ``--priority``, ``--wait`` and its options, and the job's
outcome."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import redis

from worker.enqueue import MAX_WAIT_S, check_timeout, wait_for
from worker.errors import InvalidTimeout
from worker.jobs.state import JobRecord

__all__ = ["EXIT_PARKED", "WaitOptions", "add_priority_option", "add_wait_options", "report", "wait_options"]

EXIT_PARKED = 3


def add_priority_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--priority`` (checked where the job is queued, so a bad value is refused before anything is written)."""
    parser.add_argument("--priority", default="normal", metavar="essential|normal",
                        help="essential jobs may spend the tenant's reserve; normal jobs stop before it "
                             "(default normal)")


def add_wait_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--wait``, ``--timeout`` and ``--json`` (``wait_options`` checks them)."""
    parser.add_argument("--wait", action="store_true", help="block until the job ends and print its outcome")
    # Read as text and checked by wait_options: argparse's float() takes "nan" and "inf", and its own
    # refusals come with a usage block rather than one line.
    parser.add_argument("--timeout", default="3600", metavar="SECONDS",
                        help=f"seconds --wait waits, 0 to {MAX_WAIT_S:,} (default 3600)")
    parser.add_argument("--json", action="store_true", help="with --wait: print the outcome as JSON")


@dataclass(frozen=True)
class WaitOptions:
    """``--wait``, ``--timeout`` and ``--json``, checked."""

    wait: bool
    timeout: float
    json: bool


def wait_options(args: argparse.Namespace) -> WaitOptions:
    """The checked wait options; ``InvalidTimeout`` for a ``--timeout`` that is not 0 to a week of seconds.
    Call it before queueing anything, so a bad value writes nothing."""
    try:
        seconds = float(args.timeout)
    except ValueError:
        raise InvalidTimeout(f"--timeout must be a number of seconds, got {args.timeout!r}") from None
    try:
        timeout = check_timeout(seconds)
    except InvalidTimeout:
        raise InvalidTimeout(f"--timeout must be a number of seconds from 0 to {MAX_WAIT_S:,} (a week), "
                             f"got {args.timeout!r}") from None
    return WaitOptions(wait=args.wait, timeout=timeout, json=args.json)


def report(client: redis.Redis, tenant: str, job_id: str, options: WaitOptions) -> int:
    """Print the queued job's id, or with ``--wait`` its outcome; return the command's exit code."""
    if not options.wait:
        print(job_id)
        return 0
    record = wait_for(client, tenant, job_id, timeout=options.timeout)
    if record is None:
        print(f"job {job_id}: unknown", file=sys.stderr)
        return 1
    if options.json:
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
