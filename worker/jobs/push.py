"""Push: upsert records into one object by an external-id field, 200 records a request (one credit).

The records wait in Redis from the moment the job is queued; after each batch the position is saved, so a
job that stops halfway continues with the next batch. Upserting by external id makes a re-sent batch update
the same records rather than create duplicates. Per-record errors are kept on the job, never swallowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import structlog

from quota.errors import InvalidInput
from worker import keys
from worker.errors import SliceEnded
from worker.jobs.state import JOB_TTL_S, JobStore
from worker.salesforce.client import TenantSalesforce
from worker.salesforce.soql import check_name

__all__ = ["BATCH", "MAX_RECORDS", "PushResult", "check_records", "run_push", "store_records"]

log = structlog.get_logger("crmsync.push")
BATCH = 200  # sObject Collections take at most 200 records a request
MAX_RECORDS = 1_000_000


def check_records(records: object, external_id: str) -> list[dict[str, Any]]:
    """Return ``records`` if each is an object of valid field names with a value for ``external_id``."""
    if not isinstance(records, list) or not records:
        raise InvalidInput("a push needs a non-empty list of records")
    if len(records) > MAX_RECORDS:
        raise InvalidInput(f"a push takes at most {MAX_RECORDS:,} records, got {len(records):,}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput(f"record {index} is not a JSON object")
        for name, value in record.items():
            check_name(name, f"field in record {index}")
            if isinstance(value, dict | list):
                raise InvalidInput(f"record {index}: field {name} must be a scalar value")
        if record.get(external_id) in (None, ""):
            raise InvalidInput(f"record {index} has no value for the external id field {external_id}")
    return records


def store_records(client: redis.Redis, tenant: str, job_id: str, records: list[dict[str, Any]]) -> None:
    """Keep a queued push's records in Redis until the job has sent them."""
    key = keys.push_records(tenant, job_id)
    client.hset(key, mapping={"records": json.dumps(records), "position": 0})
    client.expire(key, JOB_TTL_S)


@dataclass(frozen=True)
class PushResult:
    """What one push job did."""

    batches: int
    sent: int
    failed: int


def _errors(results: Sequence[dict[str, Any]], batch: Sequence[dict[str, Any]], start: int,
            external_id: str) -> list[dict[str, Any]]:
    failed = []
    for offset, (result, record) in enumerate(zip(results, batch, strict=False)):
        if not result.get("success", False):
            failed.append({
                "index": start + offset,
                "external_id": record.get(external_id),
                "errors": [{"statusCode": e.get("statusCode"), "message": e.get("message"),
                            "fields": e.get("fields", [])} for e in result.get("errors", [])],
            })
    return failed


def _upsert(sf: TenantSalesforce, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    results: Any = sf.call(lambda s: s.restful(path, method="PATCH", json=body), what="upsert")
    if not isinstance(results, list):
        raise ValueError(f"unexpected sObject Collections answer: {str(results)[:200]}")
    return results


def run_push(
    sf: TenantSalesforce, *, client: redis.Redis, jobs: JobStore, job_id: str, sobject: str, external_id: str,
    slice_over: Callable[[], bool] = lambda: False,
) -> PushResult:
    """Upsert the job's stored records from its saved position to the end.

    Raises ``SliceEnded`` between two batches, after the saved position, once ``slice_over()`` says so."""
    tenant = sf.tenant
    key = keys.push_records(tenant, job_id)
    raw = cast(list[Any], client.hmget(key, ["records", "position"]))
    if raw[0] is None:
        raise InvalidInput(f"push job {job_id} has no stored records (expired or already sent)")
    records: list[dict[str, Any]] = json.loads(raw[0])
    position = int(raw[1] or 0)
    path = f"composite/sobjects/{check_name(sobject, 'object')}/{check_name(external_id, 'external id field')}"
    batches = failed_total = 0
    while position < len(records):
        batch = records[position:position + BATCH]
        body = {"allOrNone": False, "records": [{"attributes": {"type": sobject}, **r} for r in batch]}
        results = _upsert(sf, path, body)
        failed = _errors(results, batch, position, external_id)
        jobs.add_errors(tenant, job_id, failed)
        jobs.progress(tenant, job_id, records=len(batch) - len(failed), failed=len(failed))
        position += len(batch)
        client.hset(key, "position", str(position))
        batches += 1
        failed_total += len(failed)
        log.info("batch_upserted", tenant=tenant, object=sobject, records=len(batch), failed=len(failed))
        if position < len(records) and slice_over():
            raise SliceEnded(f"push of {sobject} continues after {position:,} of {len(records):,} records")
    client.delete(key)
    return PushResult(batches=batches, sent=len(records), failed=failed_total)
