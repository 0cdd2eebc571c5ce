"""Push: upsert records into one object by an external-id field, 200 records a request (one credit).

The records wait in Redis from the moment the job is queued; after each batch the position is saved, so a
job that stops halfway continues with the next batch. Upserting by external id makes a re-sent batch update
the same records rather than create duplicates. Per-record errors are kept on the job, never swallowed.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import redis
import structlog
from simple_salesforce.exceptions import SalesforceError, SalesforceMalformedRequest

from quota.errors import InvalidInput, QuotaExhausted
from worker import keys
from worker.errors import (
    AuthFailed,
    BulkJobLost,
    InvalidName,
    InvalidRecords,
    OrgLimitExceeded,
    SliceEnded,
    UnsafeRequest,
)
from worker.jobs.bulk import NO_BULK, BulkOptions, csv_rows, wait_for_job, write_records
from worker.jobs.cost import BULK_UPLOAD_BYTES, bulk_push_cost, choose, rest_push_cost
from worker.jobs.state import JOB_TTL_S, JobStore
from worker.salesforce import bulk as bulk_api
from worker.salesforce.client import TenantSalesforce
from worker.salesforce.soql import check_name

__all__ = [
    "BATCH",
    "MAX_PUSH_BYTES",
    "MAX_RECORDS",
    "MAX_RECORD_BYTES",
    "PushResult",
    "RecordCheck",
    "check_records",
    "run_push",
    "store_records",
]

log = structlog.get_logger("crmsync.push")
BATCH = 200  # sObject Collections take at most 200 records a request
INGEST_BATCH = 10_000  # Salesforce counts a Bulk ingest batch per 10,000 records
MAX_RECORDS = 1_000_000
# Sizes are of records as crmsync stores them: compact JSON in UTF-8. Salesforce takes at most 400,000
# characters a record (Bulk API 2.0 ingest limits; 131,072 in one field). Field names, quotes and multi-byte
# UTF-8 make a record's JSON longer than its characters, so the cap is 2.5 times that: it refuses a record
# Salesforce would take only if the record is near Salesforce's limit and mostly non-Latin text.
MAX_RECORD_BYTES = 1_000_000
# Bulk API 2.0 takes 150 MB an upload once base64-encoded, about 100 MB of data (BULK_UPLOAD_BYTES): a push
# within it goes as one ingest job (its CSV names each field once, where its JSON names it in every record),
# and no push holds more than this of Redis memory.
MAX_PUSH_BYTES = BULK_UPLOAD_BYTES
# ``attributes`` is the record's metadata in an sObject Collections request (its type): set by crmsync only.
RESERVED_FIELDS = frozenset({"attributes"})


def _record_json(record: object) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_value(name: str, value: object) -> str | None:
    """Why ``value`` cannot be sent as field ``name``, or None."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"field {name} is not a finite number ({value}): Salesforce takes none"
    if isinstance(value, dict | list):
        return f"field {name} must be a scalar value (a string, number, true, false or null)"
    return f"field {name} is a {type(value).__name__}: a value must be a string, number, true, false or null"


class RecordCheck:
    """A push's records checked one at a time, each error naming where the record came from (``where``: a file
    and line, or the record's index), against the push's rules and its size caps."""

    def __init__(self, external_id: str) -> None:
        self.external_id = check_name(external_id, "external id field")
        self.records: list[dict[str, Any]] = []
        self.bytes = 2  # the stored list's brackets; each record adds its JSON and a comma

    def add(self, record: object, where: str) -> None:
        """Check ``record`` and keep it, or raise ``InvalidRecords`` saying ``where`` and why."""
        if not isinstance(record, dict):
            raise InvalidRecords(f"{where}: a record must be a JSON object")
        if len(self.records) >= MAX_RECORDS:
            raise InvalidRecords(f"{where}: a push takes at most {MAX_RECORDS:,} records")
        seen: dict[str, str] = {}
        for name, value in record.items():
            try:
                check_name(name, "field name")
            except InvalidName as exc:
                raise InvalidRecords(f"{where}: {exc}") from None
            if name.lower() in RESERVED_FIELDS:
                raise InvalidRecords(f"{where}: field {name} is reserved (crmsync sets the record's attributes)")
            if name.lower() in seen:
                raise InvalidRecords(f"{where}: fields {seen[name.lower()]} and {name} are the same field "
                                     "(Salesforce field names ignore case)")
            seen[name.lower()] = name
            why = _check_value(name, value)
            if why is not None:
                raise InvalidRecords(f"{where}: {why}")
        if record.get(self.external_id) in (None, ""):
            raise InvalidRecords(f"{where}: no value for the external id field {self.external_id}")
        size = len(_record_json(record).encode())
        if size > MAX_RECORD_BYTES:
            raise InvalidRecords(f"{where}: the record is {size:,} bytes as JSON; "
                                 f"a record may be at most {MAX_RECORD_BYTES:,}")
        self.bytes += size + 1
        if self.bytes > MAX_PUSH_BYTES:
            raise InvalidRecords(f"{where}: the push's records pass {MAX_PUSH_BYTES:,} bytes as JSON, "
                                 "the most one push takes: split it")
        self.records.append(record)

    def done(self) -> list[dict[str, Any]]:
        """The checked records; ``InvalidRecords`` if there are none."""
        if not self.records:
            raise InvalidRecords("a push needs at least one record")
        return self.records


def check_records(records: object, external_id: str) -> list[dict[str, Any]]:
    """Return ``records`` if it is a non-empty list of flat objects of valid field names and JSON values, each
    with a value for ``external_id``, within the size caps; else raise ``InvalidRecords`` (``InvalidName`` for
    a bad ``external_id``)."""
    if not isinstance(records, list):
        raise InvalidRecords("a push needs a non-empty list of records")
    check = RecordCheck(external_id)
    for index, record in enumerate(records):
        check.add(record, f"record {index}")
    return check.done()


def store_records(client: redis.Redis, tenant: str, job_id: str, records: list[dict[str, Any]]) -> None:
    """Keep a queued push's records in Redis until the job has sent them."""
    key = keys.push_records(tenant, job_id)
    # Stored in the form the size caps measure: compact JSON in UTF-8.
    client.hset(key, mapping={"records": _record_json(records).encode(), "position": 0})
    client.expire(key, JOB_TTL_S)


@dataclass(frozen=True)
class PushResult:
    """What one push job did."""

    batches: int
    sent: int
    failed: int


def _errors(results: Sequence[dict[str, Any]], batch: Sequence[dict[str, Any]], indices: Sequence[int],
            external_id: str) -> list[dict[str, Any]]:
    failed = []
    for index, result, record in zip(indices, results, batch, strict=False):
        if not result.get("success", False):
            failed.append({
                "index": index,
                "external_id": record.get(external_id),
                "errors": [{"statusCode": e.get("statusCode"), "message": e.get("message"),
                            "fields": e.get("fields", [])} for e in result.get("errors", [])],
            })
    return failed


class _Push:
    """A push job's stored records, where it stands, and what it needs to go on."""

    def __init__(self, sf: TenantSalesforce, *, client: redis.Redis, jobs: JobStore, job_id: str, sobject: str,
                 external_id: str, slice_over: Callable[[], bool]) -> None:
        self.sf, self.client, self.jobs, self.job_id = sf, client, jobs, job_id
        self.sobject, self.external_id, self.slice_over = sobject, external_id, slice_over
        self.key = keys.push_records(sf.tenant, job_id)
        raw = cast(list[Any], client.hmget(self.key, ["records", "position", "bulk", "left"]))
        if raw[0] is None:
            raise InvalidInput(f"push job {job_id} has no stored records (expired or already sent)")
        self.records: list[dict[str, Any]] = json.loads(raw[0])
        self.position = int(raw[1] or 0)
        self._bulk = self._checked_bulk(json.loads(raw[2]) if raw[2] else None)
        # After a Bulk job that left records unprocessed: their indices, which go on by REST.
        self.left: list[int] | None = json.loads(raw[3]) if raw[3] else None
        self.failed = 0

    @cached_property
    def csv(self) -> bytes:
        """The records as an ingest job's CSV: built once, for the size check and then the upload."""
        return write_records(self.records)

    def _checked_bulk(self, state: object) -> dict[str, Any] | None:
        """The stored Bulk state, or ``None`` (and forgotten) when its job id is not in Salesforce's shape: the
        push then goes on as if no Bulk job had been made (records are upserted by external id, so sending some
        again changes nothing)."""
        if state is None:
            return None
        try:
            if not isinstance(state, dict):
                raise UnsafeRequest(f"stored Bulk state is a {type(state).__name__}, not an object")
            bulk_api.check_job_id(state.get("job_id"))
        except UnsafeRequest as exc:
            log.warning("checkpoint_discarded", tenant=self.sf.tenant, object=self.sobject, part="bulk",
                        reason=str(exc))
            self.client.hdel(self.key, "bulk")
            return None
        return state

    def bulk_state(self) -> dict[str, Any] | None:
        """The Bulk ingest job this push is using: ``job_id``, ``stage``, ``polls``, ``requests``."""
        return self._bulk

    def save_bulk(self, state: dict[str, Any]) -> None:
        """Checkpoint the Bulk ingest job's progress."""
        self._bulk = state
        self.client.hset(self.key, "bulk", json.dumps(state))


def _upsert(sf: TenantSalesforce, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    results: Any = sf.call(lambda s: s.restful(path, method="PATCH", json=body), what="upsert")
    if not isinstance(results, list):
        raise ValueError(f"unexpected sObject Collections answer: {str(results)[:200]}")
    return results


def run_push(
    sf: TenantSalesforce, *, client: redis.Redis, jobs: JobStore, job_id: str, sobject: str, external_id: str,
    slice_over: Callable[[], bool] = lambda: False, bulk: BulkOptions = NO_BULK,
) -> PushResult:
    """Upsert the job's stored records from its saved position to the end.

    By sObject Collections, or by a Bulk API 2.0 ingest job when that costs fewer credits (per
    ``bulk.mode``). Raises ``SliceEnded`` between two batches or polls, after the saved position, once
    ``slice_over()`` says so."""
    push = _Push(sf, client=client, jobs=jobs, job_id=job_id, sobject=sobject, external_id=external_id,
                 slice_over=slice_over)
    if push.bulk_state() is not None or (push.position == 0 and _by_bulk(push, bulk)):
        left = run_bulk_push(push, bulk)
        if not left:
            client.delete(push.key)
            return PushResult(batches=1, sent=len(push.records), failed=push.failed)
        # What the Bulk job left (its batch budget ran out, or it failed or was aborted) goes by REST; the
        # records keep their place in the push, so their errors name the index the caller knows.
        log.warning("bulk_push_unprocessed", tenant=sf.tenant, object=sobject, records=len(left))
        push.left, push.position = left, 0
        client.hset(push.key, mapping={"left": json.dumps(left), "position": 0})
        client.hdel(push.key, "bulk")
    return _rest_push(push)


def _by_bulk(push: _Push, bulk: BulkOptions) -> bool:
    n = len(push.records)
    if bulk.mode == "never" or len(push.csv) > BULK_UPLOAD_BYTES:
        return False
    if choose(bulk.mode, rest_push_cost(n), bulk_push_cost(n)) == "rest":
        return False
    return bulk.budgets is None or bulk.budgets.allows_ingest(push.sf, math.ceil(n / INGEST_BATCH))


def _rest_push(push: _Push) -> PushResult:
    sf, records = push.sf, push.records
    order = push.left if push.left is not None else range(len(records))
    path = (f"composite/sobjects/{check_name(push.sobject, 'object')}/"
            f"{check_name(push.external_id, 'external id field')}")
    batches = failed_total = 0
    while push.position < len(order):
        indices = order[push.position:push.position + BATCH]
        batch = [records[i] for i in indices]
        # Our attributes last: a record's own (refused at enqueue since, but stored by an older version) never
        # names another object.
        body = {"allOrNone": False, "records": [{**r, "attributes": {"type": push.sobject}} for r in batch]}
        results = _upsert(sf, path, body)
        failed = _errors(results, batch, indices, push.external_id)
        push.jobs.add_errors(sf.tenant, push.job_id, failed)
        push.jobs.progress(sf.tenant, push.job_id, records=len(batch) - len(failed), failed=len(failed))
        push.position += len(batch)
        push.client.hset(push.key, "position", str(push.position))
        batches += 1
        failed_total += len(failed)
        log.info("batch_upserted", tenant=sf.tenant, object=push.sobject, records=len(batch), failed=len(failed))
        if push.position < len(order) and push.slice_over():
            raise SliceEnded(f"push of {push.sobject} continues after {push.position:,} of {len(order):,} records")
    push.client.delete(push.key)
    return PushResult(batches=batches, sent=len(records), failed=failed_total + push.failed)


def run_bulk_push(push: _Push, bulk: BulkOptions) -> list[int]:
    """Upsert the records with a Bulk ingest job and return the indices of those it left unprocessed (none
    when it completed).

    Each step is checkpointed (created, uploading, uploaded, closed, the polls), so a stopped job goes on with
    the same Salesforce job. An upload that may or may not have arrived is never sent again: that job is
    aborted and a new one created (the extra credits are logged). Per-record failures are kept on the job as
    for sObject Collections.
    """
    sf = push.sf
    state = push.bulk_state()
    if state is not None and state["stage"] == "uploading":
        _abandon(push, state, "the upload may or may not have arrived")
        state = None
    if state is None:
        info = sf.call(lambda s: bulk_api.create_ingest_job(s, push.sobject, push.external_id),
                       what="bulk_ingest_create")
        state = {"job_id": str(info["id"]), "stage": "open", "polls": 0, "requests": 1}
        push.save_bulk(state)
    job = state["job_id"]
    if state["stage"] == "open":
        push.save_bulk({**state, "stage": "uploading"})
        try:  # never retried: an upload whose answer was lost may have arrived
            sf.call(lambda s: bulk_api.upload_batch(s, job, push.csv), what="bulk_ingest_upload",
                    retry=False)
        except (QuotaExhausted, OrgLimitExceeded, AuthFailed):
            push.save_bulk(state)  # refused before Salesforce took it: the upload may be made again
            raise
        state = {**state, "stage": "uploaded", "requests": state["requests"] + 1}
        push.save_bulk(state)
    if state["stage"] == "uploaded":
        with contextlib.suppress(SalesforceMalformedRequest):  # closed before a crash: the polls will tell
            sf.call(lambda s: bulk_api.close_job(s, job), what="bulk_ingest_close")
        state = {**state, "stage": "closed", "requests": state["requests"] + 1}
        push.save_bulk(state)

    def saved(polls: int) -> None:
        state.update(polls=polls, requests=state["requests"] + 1)
        push.save_bulk(state)

    try:
        info = wait_for_job(sf, "ingest", job, polls=state["polls"], options=bulk, slice_over=push.slice_over,
                            saved=saved)
    except BulkJobLost as lost:
        return _after_failure(push, bulk, state, lost)
    _record_failures(push, job, int(info.get("numberRecordsFailed") or 0))
    processed = int(info.get("numberRecordsProcessed") or 0)
    push.jobs.progress(sf.tenant, push.job_id, records=processed - push.failed)
    log.info("bulk_push_done", tenant=sf.tenant, object=push.sobject, bulk_job=job, records=processed,
             failed=push.failed, requests=state["requests"])
    return []


def _abandon(push: _Push, state: dict[str, Any], why: str) -> None:
    log.warning("bulk_job_recreated", tenant=push.sf.tenant, object=push.sobject, bulk_job=state["job_id"],
                why=why, credits_spent=state["requests"])
    with contextlib.suppress(SalesforceError):
        push.sf.call(lambda s: bulk_api.abort_job(s, "ingest", state["job_id"]), what="bulk_ingest_abort")
    push.client.hdel(push.key, "bulk")


def _after_failure(push: _Push, bulk: BulkOptions, state: dict[str, Any], lost: BulkJobLost) -> list[int]:
    """What a failed, aborted or vanished ingest job left: its failures kept, what it did counted, the indices
    of its unprocessed records returned."""
    log.warning("bulk_job_lost", tenant=push.sf.tenant, object=push.sobject, bulk_job=state["job_id"],
                state=lost.state, detail=str(lost)[:200], credits_spent=state["requests"])
    everything = list(range(len(push.records)))
    if lost.state == "unknown to Salesforce":  # nothing to ask: upserts by external id may all be sent again
        return everything
    if "ExceededQuota" in str(lost) and bulk.budgets is not None:
        bulk.budgets.spent("batches", str(lost))
    failed = _record_failures(push, state["job_id"], 1)
    text = push.sf.call(lambda s: bulk_api.ingest_results(s, state["job_id"], "unprocessedrecords"),
                        what="bulk_ingest_unprocessed")
    left = _indices(push, csv_rows(text))
    if not left and not failed and lost.state == "Failed":
        # A job that failed as a whole (its upload unreadable) lists nothing as processed or unprocessed:
        # every record goes again, by REST (upserts by external id, so none is written twice).
        return everything
    push.jobs.progress(push.sf.tenant, push.job_id, records=len(push.records) - failed - len(left))
    return left


def _record_failures(push: _Push, job: str, failed: int) -> int:
    """Keep the job's failed records (``sf__Error``: ``CODE:message:fields --``) as per-record errors; return
    how many."""
    if failed <= 0:
        return 0
    text = push.sf.call(lambda s: bulk_api.ingest_results(s, job, "failedResults"), what="bulk_ingest_failed")
    rows = csv_rows(text)
    errors = []
    for index, row in zip(_indices(push, rows), rows, strict=True):
        code, _, rest = (row.get("sf__Error") or "").partition(":")
        message, _, fields = rest.rpartition(":")
        errors.append({"index": index, "external_id": push.records[index].get(push.external_id), "errors": [{
            "statusCode": code, "message": message or rest,
            "fields": [f.strip() for f in fields.removesuffix("--").split(",") if f.strip()]}]})
    push.jobs.add_errors(push.sf.tenant, push.job_id, errors)
    push.jobs.progress(push.sf.tenant, push.job_id, failed=len(errors))
    push.failed += len(errors)
    return len(errors)


def _indices(push: _Push, rows: Iterable[dict[str, str]]) -> list[int]:
    """Where each CSV row Salesforce sent back stands in the push, by its external id (the same id twice in
    one push is matched in order)."""
    places: dict[str, list[int]] = {}
    for index, record in enumerate(push.records):
        places.setdefault(str(record.get(push.external_id)), []).append(index)
    return [places[key].pop(0) for key in (row.get(push.external_id, "") for row in rows) if places.get(key)]
