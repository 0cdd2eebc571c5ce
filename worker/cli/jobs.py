"""``crmsync sync``, ``crmsync push`` and ``crmsync worker``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis

from quota.errors import InvalidInput
from worker.cli.support import redis_client
from worker.enqueue import enqueue_pull, enqueue_push, wait_for
from worker.jobs.state import JobRecord
from worker.metrics.multiprocess import prepare_multiproc_dir

__all__ = ["register"]

EXIT_PARKED = 3


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise InvalidInput(f"{path}:{number}: each line must be a JSON object")
        records.append(record)
    return records


def _report(client: redis.Redis, tenant: str, job_id: str, args: argparse.Namespace) -> int:
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
    text = (f"job {record.job_id}: {record.state} - {record.kind} {record.tenant}/{record.sobject}, "
            f"{record.records:,} records, {record.credits:,} credits")
    if record.failed_records:
        text += f", {record.failed_records:,} records refused (see --json for each error)"
    if record.error:
        text += f"\n  {record.error}"
    return text


def _cmd_sync(args: argparse.Namespace) -> int:
    client = redis_client()
    fields = [f for f in args.fields.split(",") if f] if args.fields else []
    return _report(client, args.tenant, enqueue_pull(client, args.tenant, args.object, fields), args)


def _cmd_push(args: argparse.Namespace) -> int:
    client = redis_client()
    records = _read_jsonl(args.file)
    job_id = enqueue_push(client, args.tenant, args.object, records, args.external_id)
    return _report(client, args.tenant, job_id, args)


def _cmd_worker(args: argparse.Namespace) -> int:
    # A thin wrapper: the dramatiq CLI does process management, signals and reloads.
    command = [sys.executable, "-m", "dramatiq", "worker.app", "--processes", str(args.processes),
               "--threads", str(args.threads)]
    # Parent only, before Dramatiq forks: create and empty $PROMETHEUS_MULTIPROC_DIR (no-op when unset).
    prepare_multiproc_dir()
    # Idle consumers poll this often (Dramatiq's default is 1 s): resumed jobs start within the second.
    os.environ.setdefault("dramatiq_worker_timeout", "200")
    os.execv(sys.executable, command)  # noqa: S606 (our own interpreter, a fixed argument list)


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="block until the job ends and print its outcome")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    parser.add_argument("--json", action="store_true", help="with --wait: print the outcome as JSON")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sync``, ``push`` and ``worker`` subcommands."""
    sync = commands.add_parser("sync", help="queue an incremental pull of one object for a tenant")
    sync.add_argument("tenant")
    sync.add_argument("object", help="sObject API name, e.g. Lead")
    sync.add_argument("--fields", help="comma-separated fields to pull (Id and SystemModstamp are always pulled)")
    _wait_options(sync)
    sync.set_defaults(handler=_cmd_sync)

    push = commands.add_parser("push", help="queue an upsert of JSON Lines records by an external id field")
    push.add_argument("tenant")
    push.add_argument("object", help="sObject API name, e.g. Lead")
    push.add_argument("--file", required=True, help="JSON Lines file, one record (JSON object) a line")
    push.add_argument("--external-id", required=True, help="external id field to upsert by, e.g. External_Id__c")
    _wait_options(push)
    push.set_defaults(handler=_cmd_push)

    worker = commands.add_parser("worker", help="run the Dramatiq workers (dramatiq worker.app)")
    worker.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="worker processes")
    worker.add_argument("--threads", type=int, default=4, help="threads per process")
    worker.set_defaults(handler=_cmd_worker)
