"""``crmsync push``: queue an upsert of JSON Lines records by an external id field."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from quota.errors import InvalidInput
from worker.cli import Subcommands, add_command
from worker.cli.job_report import add_priority_option, add_wait_options, report
from worker.cli.support import redis_client
from worker.enqueue import enqueue_push

__all__ = ["register"]


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


def _cmd_push(args: argparse.Namespace) -> int:
    client = redis_client()
    records = _read_jsonl(args.file)
    job_id = enqueue_push(client, args.tenant, args.object, records, args.external_id, priority=args.priority)
    return report(client, args.tenant, job_id, args)


def register(commands: Subcommands) -> None:
    """Add the ``push`` command."""
    push = add_command(commands, "push")
    push.add_argument("tenant")
    push.add_argument("object", help="sObject API name, e.g. Lead")
    push.add_argument("--file", required=True, help="JSON Lines file, one record (JSON object) a line")
    push.add_argument("--external-id", required=True, help="external id field to upsert by, e.g. External_Id__c")
    add_priority_option(push)
    add_wait_options(push)
    push.set_defaults(handler=_cmd_push)
