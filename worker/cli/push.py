"""``crmsync push``: queue an upsert of JSON Lines records by an external id field."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import IO, Any

from worker.cli import Subcommands, add_command
from worker.cli.job_report import add_priority_option, add_wait_options, report, wait_options
from worker.cli.support import cli_redis
from worker.enqueue import enqueue_push
from worker.errors import InvalidRecords
from worker.jobs.push import MAX_PUSH_BYTES, MAX_RECORD_BYTES, MAX_RECORDS, RecordCheck

__all__ = ["read_records", "register"]

_BOM = b"\xef\xbb\xbf"


class _Refused(ValueError):
    """JSON that parses but that a push does not take: NaN or Infinity, or a field given twice."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number Salesforce takes")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in pairs:
        if name in record:
            raise _Refused(f"field {name[:60]!r} is given twice")
        record[name] = value
    return record


def _lines(file: IO[bytes]) -> Iterator[bytes]:
    """The file's lines, split at ``\\n`` only (a JSON string may hold U+2028, where ``str.splitlines`` would
    split), each read to at most one byte over the size of a whole push."""
    while line := file.readline(MAX_PUSH_BYTES + 1):
        yield line


def _record(line: bytes, where: str) -> object | None:
    """The JSON value on one line (None for a blank line), or ``InvalidRecords`` saying ``where`` and why."""
    if len(line) > MAX_PUSH_BYTES:
        raise InvalidRecords(f"{where}: the line is longer than {MAX_PUSH_BYTES:,} bytes, the most a push takes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecords(f"{where}: not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})") \
            from None
    if not text.strip(" \t\r\n"):
        return None
    try:
        record: object = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise InvalidRecords(f"{where}: nested too deeply (a record is one flat JSON object)") from None
    except json.JSONDecodeError as exc:
        raise InvalidRecords(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except _Refused as exc:
        raise InvalidRecords(f"{where}: {exc}") from None
    except ValueError:  # the one other: an integer of more digits than Python converts (sys.int_info)
        raise InvalidRecords(f"{where}: a number has too many digits to be a Salesforce value") from None
    return record


def read_records(path: str, external_id: str) -> list[dict[str, Any]]:
    """The records of the JSON Lines file at ``path``, each checked as ``enqueue_push`` checks records; the first
    refusal raises ``InvalidRecords`` as ``PATH:LINE: why``. Nothing is kept past the first refusal."""
    check = RecordCheck(external_id)
    try:
        with open(path, "rb") as file:
            for number, line in enumerate(_lines(file), 1):
                where = f"{path}:{number}"
                record = _record(line.removeprefix(_BOM) if number == 1 else line, where)
                if record is not None:
                    check.add(record, where)
    except OSError as exc:
        raise InvalidRecords(f"cannot read {path}: {exc.strerror}") from None
    if not check.records:
        raise InvalidRecords(f"{path}: no records (one JSON object a line)")
    return check.records


def _cmd_push(args: argparse.Namespace) -> int:
    options = wait_options(args)
    records = read_records(args.file, args.external_id)
    with cli_redis("Redis") as client:
        job_id = enqueue_push(client, args.tenant, args.object, records, args.external_id, priority=args.priority)
        return report(client, args.tenant, job_id, options)


def register(commands: Subcommands) -> None:
    """Add the ``push`` command."""
    push = add_command(commands, "push")
    push.add_argument("tenant")
    push.add_argument("object", help="sObject API name, e.g. Lead (in any case: LEAD is Lead)")
    push.add_argument("--file", required=True,
                      help=f"JSON Lines file in UTF-8, one record (a flat JSON object) a line; at most "
                           f"{MAX_RECORDS:,} records, {MAX_RECORD_BYTES:,} bytes a record and {MAX_PUSH_BYTES:,} "
                           "a push, as compact JSON")
    push.add_argument("--external-id", required=True, help="external id field to upsert by, e.g. External_Id__c")
    add_priority_option(push)
    add_wait_options(push)
    push.set_defaults(handler=_cmd_push)
