"""Bulk API 2.0 jobs of one org: states, processing over the emulator's clock, and query jobs.

Nothing runs in the background: a job's progress is a function of the clock. Whenever the org is served,
``BulkJobs.advance`` brings every queued or running job up to now, processing the records it would have
processed at ``rate`` records per second since it was queued (all of them at once when ``rate`` is 0).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any, ClassVar

from emulator.bulk_csv import write_csv
from emulator.errors import ApiError, not_found
from emulator.ids import IdFactory, to_18
from emulator.limits import BulkBudgets
from emulator.sftime import format_epoch
from emulator.store import USER_ID, Store

__all__ = ["ACTIVE", "DEFAULT_BULK_RATE", "QUERY_FAILURE", "TERMINAL", "BulkJobs", "Job", "QueryJob", "csv_value",
           "decode_locator", "encode_locator", "invalid_state"]

# Records per second: a few thousand rows finish within a second or two, as small jobs do on Salesforce.
DEFAULT_BULK_RATE = 5000.0
ACTIVE = frozenset({"UploadComplete", "InProgress"})
TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
_JOB_PREFIX = "750"
# What a query job that Salesforce gave up on says: "If you receive a message that the API retried more than 15
# times, apply a filter criteria and try again" (Understanding Bulk API 2.0 Query).
QUERY_FAILURE = "Retried more than 15 times"


def invalid_state(message: str) -> ApiError:
    """400 INVALIDJOBSTATE, Salesforce's answer to a state change the job's state forbids."""
    return ApiError(400, "INVALIDJOBSTATE", message)


def csv_value(value: Any) -> str:
    """A query result value as Bulk API 2.0 writes it: nulls empty, booleans ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_locator(offset: int) -> str:
    """The ``Sforce-Locator`` of the set starting at ``offset`` (like Salesforce's ``MTAwMDA`` for 10000)."""
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def decode_locator(locator: str) -> int | None:
    """The offset a locator stands for, or None when it is not one of ours."""
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except ValueError:
        return None
    return int(text) if text.isdigit() else None


class Job:
    """What query and ingest jobs share: identity, CSV settings, state and progress."""

    kind: ClassVar[str]
    job_type: ClassVar[str]

    def __init__(self, job_id: str, *, operation: str, sobject: str, version: str, column_delimiter: str,
                 line_ending: str, now: float) -> None:
        self.id = job_id
        self.operation = operation
        self.object = sobject
        self.version = version
        self.column_delimiter = column_delimiter
        self.line_ending = line_ending
        self.created_at = now
        self.modstamp = now
        self.state = "Open"
        self.queued_at: float | None = None
        self.rate = 0.0
        self.total = 0
        self.processed = 0
        self.error_message: str | None = None
        # Set by the control (``fail_query_job``): the job ends Failed with this message at its next step.
        self.doomed: str | None = None

    def queue(self, now: float, rate: float, total: int) -> None:
        """UploadComplete: the job waits for processing, which starts right after ``now``."""
        self.state, self.modstamp = "UploadComplete", now
        self.queued_at, self.rate, self.total = now, rate, total

    def moment(self, records: int) -> float:
        """When processing reaches ``records`` records."""
        start = self.created_at if self.queued_at is None else self.queued_at
        return start + (records / self.rate if self.rate else 0.0)

    def advance(self, now: float, budgets: BulkBudgets) -> None:
        """Process what ``rate`` allows by ``now``; finish the job once every record is done."""
        if self.state not in ACTIVE or self.queued_at is None:
            return
        if self.doomed is not None:
            self.fail(self.doomed)
            return
        elapsed = now - self.queued_at
        if self.rate and elapsed <= 0:
            return
        target = min(self.total, math.floor(elapsed * self.rate)) if self.rate else self.total
        self.work(target, budgets)
        if self.state not in ACTIVE:
            return
        if self.processed < self.total:
            self.state = "InProgress"
            return
        self.complete(budgets)
        self.state, self.modstamp = "JobComplete", self.moment(self.total)

    def work(self, target: int, budgets: BulkBudgets) -> None:
        """Process records up to ``target`` (query jobs only count them)."""
        self.processed = max(self.processed, target)

    def complete(self, budgets: BulkBudgets) -> None:
        """Charge what a finished job costs."""

    def rebase(self, now: float, rate: float) -> None:
        """Go on at ``rate`` from what is processed by ``now`` (the job was brought up to ``now`` first)."""
        self.rate = rate
        if self.queued_at is not None and rate:
            self.queued_at = now - self.processed / rate

    def fail(self, message: str) -> None:
        """Failed, at the moment processing stopped."""
        self.state, self.error_message, self.modstamp = "Failed", message, self.moment(self.processed)

    def abort(self, now: float) -> None:
        """Aborted by the client: nothing more is processed."""
        self.state, self.modstamp = "Aborted", now

    def processing_ms(self) -> int:
        """Milliseconds spent processing so far."""
        if self.queued_at is None or self.state in ("Open", "UploadComplete"):
            return 0
        return int((self.moment(self.processed) - self.queued_at) * 1000)

    def head(self) -> dict[str, Any]:
        """The fields every job answer starts with."""
        return {"id": self.id, "operation": self.operation, "object": self.object, "createdById": USER_ID,
                "createdDate": format_epoch(self.created_at), "systemModstamp": format_epoch(self.modstamp),
                "state": self.state}

    def settings(self) -> dict[str, Any]:
        """The CSV settings part of an answer."""
        return {"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter}

    def summary(self) -> dict[str, Any]:
        """The answer to create, close and abort."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """The answer to a job info request."""
        raise NotImplementedError


class QueryJob(Job):
    """A query job: the query runs when the job is created; its rows are released as processing goes."""

    kind = "query"
    job_type = "V2Query"

    def __init__(self, job_id: str, *, header: list[str], rows: list[list[str]], **job: Any) -> None:
        super().__init__(job_id, **job)
        self.header = header
        self.rows = rows

    def complete(self, budgets: BulkBudgets) -> None:
        """Results take query storage (in started KB) once they exist."""
        size = len(write_csv(self.header, self.rows, self.column_delimiter, self.line_ending))
        budgets.query_storage_kb.add(math.ceil(size / 1024))

    def page(self, offset: int, limit: int) -> tuple[bytes, int, str]:
        """One set of results: the CSV, its number of records and the next locator (``null`` at the end)."""
        rows = self.rows[offset:offset + limit]
        end = offset + len(rows)
        locator = encode_locator(end) if end < len(self.rows) else "null"
        return write_csv(self.header, rows, self.column_delimiter, self.line_ending), len(rows), locator

    def summary(self) -> dict[str, Any]:
        """See ``Job.summary``."""
        return {**self.head(), "concurrencyMode": "Parallel", "contentType": "CSV",
                "apiVersion": float(self.version), **self.settings()}

    def info(self) -> dict[str, Any]:
        """See ``Job.info``."""
        body = {**self.head(), "concurrencyMode": "Parallel", "contentType": "CSV",
                "apiVersion": float(self.version), "jobType": self.job_type, **self.settings(),
                "numberRecordsProcessed": self.processed, "retries": 0,
                "totalProcessingTime": self.processing_ms(), "isPkChunkingSupported": True}
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


class BulkJobs:
    """The Bulk API 2.0 jobs of one org, its bulk budgets and its processing rate."""

    def __init__(self, store: Store, pod: int, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.budgets = BulkBudgets(clock)
        self.rate = DEFAULT_BULK_RATE
        self.results_cap: int | None = None  # at most this many records a results page, whatever maxRecords
        self._doomed_queries: list[str] = []  # the errorMessage of each next query job that is to fail
        self._ids = IdFactory(pod)
        self._jobs: dict[str, Job] = {}
        self._active: dict[str, Job] = {}

    def new_id(self) -> str:
        """A fresh job id (key prefix 750)."""
        return self._ids.new(_JOB_PREFIX)

    def add(self, job: Job) -> None:
        """Keep a newly created job."""
        self._jobs[job.id] = job

    def set_rate(self, rate: float, *, running: bool = False) -> None:
        """Process jobs queued from now on at ``rate``; with ``running``, the queued and running ones too, from
        the records they have processed so far."""
        self.rate = rate
        if running:
            self.advance()
            now = self.clock()
            for job in self._active.values():
                job.rebase(now, rate)

    def fail_query(self, job_id: str | None, message: str) -> None:
        """The query job ``job_id`` (queued or running) ends Failed with ``message`` at its next step; with no
        id, the next query job created does. Raises KeyError for an unknown job, ValueError for a finished one."""
        if job_id is None:
            self._doomed_queries.append(message)
            return
        job = self._jobs.get(to_18(job_id) or "")
        if job is None or job.kind != "query":
            raise KeyError(f"no query job {job_id}")
        if job.state not in ACTIVE:
            raise ValueError(f"query job {job_id} is {job.state}: only a queued or running job can fail")
        job.doomed = message

    def doom_if_asked(self, job: Job) -> None:
        """Give a newly created query job the failure ``fail_query`` set aside for the next one, if any."""
        if self._doomed_queries:
            job.doomed = self._doomed_queries.pop(0)

    def queue(self, job: Job, total: int) -> None:
        """Close ``job`` with ``total`` records at the org's current rate."""
        job.queue(self.clock(), self.rate, total)
        self._active[job.id] = job

    def get(self, kind: str, job_id: str) -> Job:
        """The job of ``kind`` with ``job_id`` (15 or 18 characters); 404 NOT_FOUND otherwise."""
        job = self._jobs.get(to_18(job_id) or "")
        if job is None or job.kind != kind:
            raise not_found()
        return job

    def remove(self, job: Job) -> None:
        """Delete a job and everything it holds."""
        self._jobs.pop(job.id, None)
        self._active.pop(job.id, None)

    def of_kind(self, kind: str) -> list[Job]:
        """Every job of ``kind``, oldest first."""
        return [job for job in self._jobs.values() if job.kind == kind]

    def advance(self) -> None:
        """Bring every queued or running job up to the clock's now."""
        now = self.clock()
        for job_id, job in list(self._active.items()):
            job.advance(now, self.budgets)
            if job.state not in ACTIVE:
                del self._active[job_id]
