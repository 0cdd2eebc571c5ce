"""What the pull and push jobs share on the Bulk API 2.0 path: options, the status polls and the CSV.

Polls back off (``PollSchedule``) and each one goes through the metered session like every request: one
credit, taken before it. Between polls the job checks its time slice, so a long Bulk job is sent again with
its Salesforce job id saved instead of holding a worker thread.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from simple_salesforce.exceptions import SalesforceResourceNotFound

from worker.errors import BulkJobLost, SliceEnded
from worker.jobs.cost import BulkMode, PollSchedule
from worker.salesforce import bulk
from worker.salesforce.bulk_budget import BulkBudgets
from worker.salesforce.client import TenantSalesforce

__all__ = ["NO_BULK", "NULL", "BulkOptions", "csv_rows", "read_records", "wait_for_job", "write_records"]

#: What Bulk API 2.0 reads as "set this field to null" (an empty value leaves the field as it is).
NULL = "#N/A"
# Bulk CSV writes datetimes as ...000Z, REST JSON as ...000+0000; the checkpoint compares them as text.
_ZULU = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z$")


@dataclass(frozen=True)
class BulkOptions:
    """How a job may use Bulk API 2.0: the operator's mode, the poll schedule and its sleep, the budgets."""

    mode: BulkMode = "never"
    schedule: PollSchedule = field(default_factory=PollSchedule)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    budgets: BulkBudgets | None = None


#: Options of a job that only uses REST (the default of ``run_pull`` and ``run_push``).
NO_BULK = BulkOptions()


def wait_for_job(sf: TenantSalesforce, kind: bulk.JobKind, job_id: str, *, polls: int, options: BulkOptions,
                 slice_over: Callable[[], bool], saved: Callable[[int], None]) -> dict[str, Any]:
    """Poll the job until it is JobComplete and return its info; ``polls`` were made before (a resumed job
    keeps its place in the backoff) and ``saved(n)`` records the count after each poll.

    Raises ``BulkJobLost`` when the job failed, was aborted or is unknown, and ``SliceEnded`` between polls
    once the job's time slice is over: never before this slice's first poll, so every slice moves the job on
    (a slice checked before its first poll could end, again and again, before polling at all).
    """
    first = True
    while True:
        if not first and slice_over():
            raise SliceEnded(f"Bulk {kind} job {job_id} is polled again in the next slice")
        first = False
        options.sleep(options.schedule.wait(polls))
        try:
            info = sf.call(lambda s: bulk.job_info(s, kind, job_id), what=f"bulk_{kind}_poll")
        except SalesforceResourceNotFound as exc:
            raise BulkJobLost(job_id, "unknown to Salesforce") from exc
        polls += 1
        saved(polls)
        state = str(info.get("state"))
        if state == "JobComplete":
            return info
        if state in bulk.FINAL_STATES:
            raise BulkJobLost(job_id, state, str(info.get("errorMessage") or ""))


def csv_rows(text: str) -> list[dict[str, str]]:
    """The rows of a CSV Salesforce sent (results of a job), by column name, values as written."""
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_records(text: str) -> list[dict[str, Any]]:
    """Records from a query job's CSV: empty values are nulls, datetimes in REST's form."""
    return [{name: _value(value) for name, value in row.items()} for row in csv_rows(text)]


def _value(value: str) -> str | None:
    if value == "":
        return None
    zulu = _ZULU.match(value)
    return f"{zulu.group(1)}+0000" if zulu else value


def write_records(records: Sequence[dict[str, Any]]) -> bytes:
    """CSV for an ingest job, as Bulk API 2.0 reads it: every field any record names is a column; a field a
    record lacks is left empty (unchanged, as when REST omits it), a null or empty value is ``#N/A`` (set to
    null, as REST does), booleans are ``true``/``false``; quoting per RFC 4180 for commas, quotes, newlines."""
    columns = list(dict.fromkeys(name for record in records for name in record))
    out = io.StringIO(newline="")
    # CRLF rows: Python quotes a value holding any character of the line terminator, so a lone \r is
    # quoted too (with LF rows it is not, and Salesforce then fails the whole job on it).
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(_row(record, columns) for record in records)
    return out.getvalue().encode("utf-8")


def _row(record: dict[str, Any], columns: Iterable[str]) -> list[str]:
    row = []
    for name in columns:
        if name not in record:
            row.append("")
        elif record[name] is None or record[name] == "":
            row.append(NULL)
        elif isinstance(record[name], bool):
            row.append("true" if record[name] else "false")
        elif isinstance(record[name], float):  # never an exponent, which Salesforce does not read
            row.append(format(Decimal(repr(record[name])), "f"))
        else:
            row.append(str(record[name]))
    return row
