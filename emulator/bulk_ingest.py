"""Bulk API 2.0 ingest jobs: uploaded CSV rows written to the org's store as processing reaches them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from emulator.bulk_csv import CsvError, read_csv, write_csv
from emulator.bulk_jobs import Job
from emulator.errors import ApiError
from emulator.ids import to_18
from emulator.limits import BulkBudgets
from emulator.schema import NUMBER_TYPES, Field, SObject
from emulator.sftime import parse_date, parse_datetime
from emulator.store import Store

__all__ = ["BATCH_RECORDS", "OPERATIONS", "IngestJob"]

# Salesforce splits ingest data into one internal batch per 10,000 records; each counts when processed.
BATCH_RECORDS = 10_000
OPERATIONS = ("insert", "update", "upsert", "delete")
NULL = "#N/A"


@dataclass(frozen=True)
class _Row:
    """One uploaded data row with the header of its upload."""

    header: tuple[str, ...]
    values: list[str]
    error: str | None = None


@dataclass(frozen=True)
class _Outcome:
    """What processing one row gave: the record id, whether it was created, or the row's error."""

    record_id: str
    created: bool = False
    error: str | None = None


def _error_text(error: ApiError) -> str:
    # As in Salesforce's failed results: CODE:message:fields --
    fields = ",".join(error.fields or [])
    return f"{error.code}:{error.message}:{fields + ' ' if fields else ''}--"


def _typed(field: Field, text: str) -> Any:
    """A CSV value as the store takes it for ``field``."""
    kind = field.type
    try:
        if kind == "boolean":
            return {"true": True, "1": True, "false": False, "0": False}[text.lower()]
        if kind == "int":
            return int(text)
        if kind in NUMBER_TYPES:
            return float(text)
        if (kind == "date" and parse_date(text) is None) or (kind == "datetime" and parse_datetime(text) is None):
            raise ValueError(text)
    except (KeyError, ValueError):
        label = field.describe()["label"]
        raise ApiError(400, "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{label}: value not of required type: {text}",
                       [field.name]) from None
    return text


class IngestJob(Job):
    """An ingest job: uploads while Open, then its rows go to the store one by one at the job's rate."""

    kind = "ingest"
    job_type = "V2Ingest"

    def __init__(self, job_id: str, *, store: Store, sobject: SObject, external_id: str | None,
                 **job: Any) -> None:
        super().__init__(job_id, sobject=sobject.name, **job)
        self.store = store
        self.sobject = sobject
        self.external_id = external_id
        self.uploads: list[str] = []
        self.rows: list[_Row] = []
        self.columns: list[str] = []
        self.outcomes: list[_Outcome] = []
        self.fatal: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def parse(self) -> int:
        """Read the uploads into rows (once, when the upload is over); returns the number of rows."""
        for text in self.uploads:
            try:
                header, rows = read_csv(text, self.column_delimiter, self.line_ending)
            except CsvError as error:
                self.fatal = self.fatal or str(error)
                continue
            unknown = next((name for name in header if self.sobject.field(name) is None), None)
            if unknown is not None:
                self.fatal = self.fatal or f"InvalidBatch : Field name not found : {unknown}"
            self.columns.extend(name for name in header if name not in self.columns)
            self.rows.extend(_Row(tuple(header), row.values, row.error) for row in rows)
        self.uploads = []
        return len(self.rows)

    def work(self, target: int, budgets: BulkBudgets) -> None:
        """Write rows up to ``target``, taking one batch from the budget at every 10,000 records."""
        if self.fatal is not None:
            self.fail(self.fatal)
            return
        while self.processed < target:
            start = self.processed
            if start % BATCH_RECORDS == 0 and not self._take_batch(budgets):
                return
            batch = start - start % BATCH_RECORDS
            duplicates = self._duplicate_keys(batch)
            for row in self.rows[start:min(target, batch + BATCH_RECORDS)]:
                self.outcomes.append(self._process(row, duplicates))
                self.processed += 1

    def _take_batch(self, budgets: BulkBudgets) -> bool:
        window = budgets.batches
        if window.used >= window.max:
            self.fail(f"ExceededQuota : Max bulk API batches ({window.max}) per 24 hrs has been reached")
            return False
        window.add()
        return True

    def _duplicate_keys(self, start: int) -> set[str]:
        # An upsert batch that names the same external id twice fails those rows (Salesforce does not pick one).
        if self.operation != "upsert" or self.external_id in (None, "Id"):
            return set()
        keys = Counter(self._values(row).get(self.external_id or "") for row in self.rows[start:start + BATCH_RECORDS])
        return {key for key, count in keys.items() if key and count > 1}

    # -- one row ---------------------------------------------------------------------------------

    def _values(self, row: _Row) -> dict[str, str]:
        """The row's values by canonical field name."""
        names = (self.sobject.field(name) for name in row.header)
        return {field.name: value for field, value in zip(names, row.values, strict=False) if field is not None}

    def _process(self, row: _Row, duplicates: set[str]) -> _Outcome:
        values = self._values(row)
        record_id = values.get("Id", "")
        if row.error is not None:
            return _Outcome(record_id, error=row.error)
        try:
            key = values.get(self.external_id or "", "")
            if key in duplicates:
                raise ApiError(400, "DUPLICATE_VALUE", f"Duplicate external id specified: {key}",
                               [self.external_id or ""])
            body = {name: None if text == NULL else _typed(self.sobject.fields[name], text)
                    for name, text in values.items() if text != ""}
            record_id, created = self._write(body)
        except ApiError as error:
            if error.code == "NOT_FOUND":
                error = ApiError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", error.fields)
            return _Outcome(record_id, error=_error_text(error))
        return _Outcome(record_id, created)

    def _write(self, body: dict[str, Any]) -> tuple[str, bool]:
        name, store = self.sobject.name, self.store
        if self.operation == "insert":
            return store.create(name, body), True
        if self.operation == "upsert" and self.external_id != "Id":
            field = self.external_id or ""
            if body.get(field) is None:
                raise ApiError(400, "MISSING_ARGUMENT", f"{field} not specified", [field])
            return store.upsert(name, field, str(body[field]), body)
        record_id = body.pop("Id", None)
        if record_id is None:
            if self.operation == "upsert":
                return store.create(name, body), True
            raise ApiError(400, "MISSING_ARGUMENT", f"Id not specified in an {self.operation} call", ["Id"])
        full = to_18(str(record_id))
        if full is None:
            raise ApiError(400, "MALFORMED_ID", f"{name} ID: id value of incorrect type: {record_id}", ["Id"])
        if self.operation == "delete":
            store.delete(name, full)
        else:
            store.update(name, full, body)
        return full, False

    # -- answers ---------------------------------------------------------------------------------

    def _original(self, row: _Row) -> list[str]:
        by_name = dict(zip(row.header, row.values, strict=False))
        return [by_name.get(name, "") for name in self.columns]

    def results(self, which: str) -> bytes:
        """``successfulResults``, ``failedResults`` or ``unprocessedrecords`` as CSV."""
        done = list(zip(self.rows, self.outcomes, strict=False))
        if which == "successfulresults":
            header = ["sf__Id", "sf__Created", *self.columns]
            rows = [[o.record_id, "true" if o.created else "false", *self._original(r)]
                    for r, o in done if o.error is None]
        elif which == "failedresults":
            header = ["sf__Id", "sf__Error", *self.columns]
            rows = [[o.record_id, o.error, *self._original(r)] for r, o in done if o.error is not None]
        else:
            header = list(self.columns)
            rows = [self._original(r) for r in self.rows[self.processed:]] if self.state != "JobComplete" else []
        return write_csv(header, rows, self.column_delimiter, self.line_ending)

    @property
    def failed(self) -> int:
        """Records processed with an error."""
        return sum(1 for outcome in self.outcomes if outcome.error is not None)

    def _described(self) -> dict[str, Any]:
        body = self.head()
        if self.external_id:
            body["externalIdFieldName"] = self.external_id
        return {**body, "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.version)}

    def _content_url(self) -> dict[str, str]:
        # Only an Open job takes uploads, so only its answers carry the upload URL.
        if self.state != "Open":
            return {}
        return {"contentUrl": f"services/data/v{self.version}/jobs/ingest/{self.id}/batches"}

    def summary(self) -> dict[str, Any]:
        """See ``Job.summary``."""
        return {**self._described(), **self._content_url(), **self.settings()}

    def info(self) -> dict[str, Any]:
        """See ``Job.info``."""
        body = {**self._described(), "jobType": self.job_type, **self._content_url(), **self.settings(),
                "numberRecordsProcessed": self.processed, "numberRecordsFailed": self.failed, "retries": 0,
                "totalProcessingTime": self.processing_ms(), "apiActiveProcessingTime": self.processing_ms(),
                "apexProcessingTime": 0}
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body
