"""Incremental pull: every record of one object modified since the last pull, page by page, resumable.

The query asks for ``SystemModstamp >= watermark``, oldest first. Records already delivered at exactly the
watermark (same Id and SystemModstamp) are skipped, so a record changed in the same millisecond as the
watermark is never missed and an unchanged one is never delivered twice. After each page the position is
checkpointed in Redis: a job that stops halfway continues from the next page (by ``nextRecordsUrl``, or, if
Salesforce no longer knows that locator, by querying again from the highest SystemModstamp delivered).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, cast

import redis
import structlog
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from worker import keys
from worker.errors import SliceEnded
from worker.jobs.sink import Sink
from worker.jobs.state import JobStore
from worker.salesforce.client import TenantSalesforce
from worker.salesforce.soql import pull_query

__all__ = ["PullCheckpoint", "PullResult", "run_pull"]

log = structlog.get_logger("crmsync.pull")
SF_DATETIME = "%Y-%m-%dT%H:%M:%S.%f%z"


@dataclass
class PullCheckpoint:
    """Where a tenant's pull of one object stands. Stored as one JSON value in the checkpoint hash."""

    connection_id: str
    watermark: str | None = None  # highest SystemModstamp of the last complete read
    boundary: dict[str, str] = field(default_factory=dict)  # Id -> SystemModstamp delivered at the watermark
    next_url: str | None = None  # the read in progress: the next page to fetch
    run_high: str | None = None  # the read in progress: highest SystemModstamp delivered so far
    run_boundary: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, client: redis.Redis, tenant: str, sobject: str, connection_id: str) -> PullCheckpoint:
        """The stored checkpoint, or a fresh one (none yet, another org's, or unreadable)."""
        raw = cast(bytes | str | None, client.hget(keys.pull_checkpoint(tenant, sobject), "state"))
        try:
            data = json.loads(raw) if raw else None
            stored = cls(**data) if isinstance(data, dict) else None
        except (TypeError, ValueError):
            log.warning("checkpoint_unreadable", tenant=tenant, object=sobject)
            stored = None
        if stored is None or stored.connection_id != connection_id:
            return cls(connection_id=connection_id)
        return stored

    def save(self, client: redis.Redis, tenant: str, sobject: str) -> None:
        """Write the checkpoint."""
        client.hset(keys.pull_checkpoint(tenant, sobject), "state", json.dumps(asdict(self)))

    def advance(self, records: Sequence[dict[str, Any]], next_url: str | None) -> None:
        """Account for one delivered page (records in ascending SystemModstamp order)."""
        for record in records:
            stamp = record["SystemModstamp"]
            if stamp != self.run_high:
                self.run_high, self.run_boundary = stamp, {}
            self.run_boundary[record["Id"]] = stamp
        self.next_url = next_url
        if next_url is None:  # the read is complete: its high mark becomes the watermark
            if self.run_high is not None:
                self.watermark, self.boundary = self.run_high, self.run_boundary
            self.run_high, self.run_boundary = None, {}


@dataclass(frozen=True)
class PullResult:
    """What one pull job did."""

    pages: int
    delivered: int


def _since(stamp: str | None) -> datetime | None:
    return datetime.strptime(stamp, SF_DATETIME) if stamp else None


def run_pull(
    sf: TenantSalesforce,
    *,
    client: redis.Redis,
    sink: Sink,
    jobs: JobStore,
    job_id: str,
    connection_id: str,
    sobject: str,
    fields: Sequence[str],
    slice_over: Callable[[], bool] = lambda: False,
) -> PullResult:
    """Pull ``sobject`` for ``sf.tenant`` from its checkpoint to the end, delivering each page to ``sink``.

    Raises ``SliceEnded`` between two pages, after the checkpoint, once ``slice_over()`` says so."""
    tenant = sf.tenant
    cp = PullCheckpoint.load(client, tenant, sobject, connection_id)
    pages = delivered = 0
    page = _first_page(sf, cp, sobject, fields)
    while True:
        pages += 1
        records = page.get("records", [])
        skip = cp.run_boundary if cp.run_high is not None else cp.boundary
        fresh = [r for r in records if skip.get(r["Id"]) != r["SystemModstamp"]]
        sink.deliver(tenant, sobject, fresh)
        cp.advance(records, None if page.get("done", True) else page["nextRecordsUrl"])
        cp.save(client, tenant, sobject)
        delivered += len(fresh)
        jobs.progress(tenant, job_id, records=len(fresh))
        log.info("page_delivered", tenant=tenant, object=sobject, records=len(fresh), done=cp.next_url is None)
        if cp.next_url is None:
            return PullResult(pages=pages, delivered=delivered)
        if slice_over():
            raise SliceEnded(f"pull of {sobject} continues after {pages} pages")
        page = _next_page(sf, cp.next_url)


def _next_page(sf: TenantSalesforce, next_url: str) -> dict[str, Any]:
    page: dict[str, Any] = sf.call(lambda s: s.query_more(next_url, identifier_is_url=True), what="query_more")
    return page


def _first_page(sf: TenantSalesforce, cp: PullCheckpoint, sobject: str, fields: Sequence[str]) -> dict[str, Any]:
    if cp.next_url is not None:
        try:
            return _next_page(sf, cp.next_url)
        except (SalesforceMalformedRequest, SalesforceResourceNotFound):
            # The query locator expired: read again from the highest SystemModstamp already delivered.
            log.info("query_locator_expired", tenant=sf.tenant, object=sobject)
            cp.next_url = None
    query = pull_query(sobject, fields, _since(cp.run_high or cp.watermark))
    first: dict[str, Any] = sf.call(lambda s: s.query(query), what="query")
    return first
