"""Bulk API 2.0, one request per function, each run through the tenant's metered session.

simple-salesforce's ``sf.bulk2`` bundles create, upload, close and a polling loop (with its own, unmetered
``time.sleep``) into one call, so a job killed halfway could not say which of its requests were made. Here
every request is a separate function that the pull and push jobs call between checkpoints, through
``TenantSalesforce.call`` (one credit each, taken before the request; retries and token refresh as for
REST). The requests are simple-salesforce's own (``simple_salesforce.util.call_salesforce`` with the
client's headers), so errors map to the same exceptions.

Formats, from Salesforce's Bulk API 2.0 and Bulk API Developer Guide: create a query job
(``POST jobs/query``), get results (``GET jobs/query/{id}/results?locator=&maxRecords=``, with the
``Sforce-Locator`` header, ``null`` on the last page), create an ingest job (``POST jobs/ingest``), upload
(``PUT jobs/ingest/{id}/batches``, ``text/csv``), close or abort (``PATCH`` with ``state``), job info and the
``failedResults`` / ``unprocessedrecords`` of an ingest job.

A job id and a results locator come back from Redis (the pull and push checkpoints) before they go into a
request, so each request function checks them first (``check_job_id``, ``check_locator``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from simple_salesforce.api import Salesforce
from simple_salesforce.util import call_salesforce

from worker.errors import UnsafeRequest

__all__ = [
    "FINAL_STATES",
    "JobKind",
    "ResultsPage",
    "abort_job",
    "check_job_id",
    "check_locator",
    "close_job",
    "create_ingest_job",
    "create_query_job",
    "ingest_results",
    "job_info",
    "query_results",
    "upload_batch",
]

JobKind = Literal["query", "ingest"]
#: States after which a job changes no more.
FINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
_JSON = "application/json"
_CSV = "text/csv"
# A Bulk API job id is a record id: key prefix 750, 15 characters (or 18, case-safe).
_JOB_ID = re.compile(r"750(?:[A-Za-z0-9]{12}|[A-Za-z0-9]{15})")
# Salesforce documents a results locator only as "a string"; its example (MTAwMDA) is base64 text.
_LOCATOR = re.compile(r"[A-Za-z0-9+/=_-]{1,256}")


def check_job_id(value: object) -> str:
    """``value`` when it is a Bulk job id; raises ``UnsafeRequest`` for anything else (it goes into a path)."""
    return _checked(value, _JOB_ID, "Bulk API job id")


def check_locator(value: object) -> str:
    """``value`` when it is a results locator; raises ``UnsafeRequest`` for anything else."""
    return _checked(value, _LOCATOR, "Bulk API results locator")


def _checked(value: object, shape: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not shape.fullmatch(value):
        shown = repr(value[:100]) if isinstance(value, str) else type(value).__name__
        raise UnsafeRequest(f"not a {what}: {shown}")
    return value


@dataclass(frozen=True)
class ResultsPage:
    """One page of a query job's results: CSV text, and the locator of the next page (``None``: the last)."""

    csv: str
    locator: str | None
    records: int


def _request(s: Salesforce, method: str, path: str, *, content: str = _JSON, accept: str = _JSON,
             **kwargs: Any) -> Any:
    headers = {**s.headers, "Content-Type": content, "Accept": accept}
    return call_salesforce(url=f"{s.base_url}jobs/{path}", method=method, session=s.session, headers=headers,
                           **kwargs)


def _json(s: Salesforce, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body, allow_nan=False)
    reply: dict[str, Any] = _request(s, method, path, data=data).json()
    return reply


def create_query_job(s: Salesforce, soql: str) -> dict[str, Any]:
    """Create a query job for ``soql`` (CSV, comma, LF); returns the job info with its ``id``."""
    return _json(s, "POST", "query", {"operation": "query", "query": soql, "contentType": "CSV",
                                      "columnDelimiter": "COMMA", "lineEnding": "LF"})


def create_ingest_job(s: Salesforce, sobject: str, external_id: str) -> dict[str, Any]:
    """Create an upsert ingest job on ``sobject`` by ``external_id`` (CSV, comma, LF)."""
    return _json(s, "POST", "ingest", {"object": sobject, "operation": "upsert", "externalIdFieldName": external_id,
                                       "contentType": "CSV", "columnDelimiter": "COMMA", "lineEnding": "CRLF"})


def job_info(s: Salesforce, kind: JobKind, job_id: str) -> dict[str, Any]:
    """The job's info: ``state``, ``numberRecordsProcessed``, ``numberRecordsFailed``, ``errorMessage``..."""
    return _json(s, "GET", f"{kind}/{check_job_id(job_id)}")


def upload_batch(s: Salesforce, job_id: str, csv_data: bytes) -> None:
    """Upload the job's CSV data (one request; Salesforce answers 201)."""
    _request(s, "PUT", f"ingest/{check_job_id(job_id)}/batches", content=_CSV, data=csv_data)


def close_job(s: Salesforce, job_id: str) -> dict[str, Any]:
    """Mark the upload complete, so Salesforce starts processing the ingest job."""
    return _json(s, "PATCH", f"ingest/{check_job_id(job_id)}", {"state": "UploadComplete"})


def abort_job(s: Salesforce, kind: JobKind, job_id: str) -> dict[str, Any]:
    """Abort the job (its processed records stay processed)."""
    return _json(s, "PATCH", f"{kind}/{check_job_id(job_id)}", {"state": "Aborted"})


def query_results(s: Salesforce, job_id: str, locator: str | None, max_records: int) -> ResultsPage:
    """One page of a completed query job's results, starting at ``locator`` (``None``: the first page)."""
    params: dict[str, Any] = {"maxRecords": max_records}
    if locator:
        params["locator"] = check_locator(locator)
    reply = _request(s, "GET", f"query/{check_job_id(job_id)}/results", accept=_CSV, params=params)
    following = reply.headers.get("Sforce-Locator") or "null"
    return ResultsPage(csv=reply.content.decode("utf-8"), locator=None if following == "null" else following,
                       records=int(reply.headers.get("Sforce-NumberOfRecords") or 0))


def ingest_results(s: Salesforce, job_id: str, which: Literal["failedResults", "unprocessedrecords"]) -> str:
    """The CSV of an ingest job's failed records (``sf__Id``, ``sf__Error``, then the columns sent) or of
    the records it never processed (the columns sent)."""
    text: str = _request(s, "GET", f"ingest/{check_job_id(job_id)}/{which}", accept=_CSV).content.decode("utf-8")
    return text
