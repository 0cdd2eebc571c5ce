"""Incremental pull: every record of one object modified since the last pull, page by page, resumable.

The query asks for ``SystemModstamp >= watermark``, oldest first. Records already delivered at exactly the
watermark (same Id and SystemModstamp) are skipped, so a record changed in the same millisecond as the
watermark is never missed and an unchanged one is never delivered twice. After each page the position is
checkpointed in Redis: a job that stops halfway continues from the next page (by ``nextRecordsUrl``, or, if
Salesforce no longer knows that locator, by querying again from the highest SystemModstamp delivered). A locator
can expire mid-read too (idle too long, or released when the user opened too many cursors): the read goes on the
same way, for one more credit. Pages may hold fewer records than asked for (200 when two long text fields are
selected): each is simply one more page.

Whatever can write the checkpoint could aim the next request elsewhere, so a stored next page or Bulk job
that is not in Salesforce's shape is discarded when the checkpoint is read (logged with the reason), and the
read goes on by querying again, as after an expired locator.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, cast

import redis
import structlog
from simple_salesforce.exceptions import SalesforceError, SalesforceMalformedRequest, SalesforceResourceNotFound

from worker import keys
from worker.errors import BulkJobLost, SliceEnded, UnsafeRequest
from worker.jobs.bulk import NO_BULK, BulkOptions, read_records, wait_for_job
from worker.jobs.cost import BULK_RESULTS_PAGE, bulk_pull_cost, choose, rest_pull_cost
from worker.jobs.sink import Sink
from worker.jobs.state import JobStore, adopt_legacy_checkpoint
from worker.salesforce import bulk as bulk_api
from worker.salesforce.client import TenantSalesforce, next_records_path
from worker.salesforce.retry import salesforce_error_code
from worker.salesforce.soql import pull_query

__all__ = ["BulkRead", "PullCheckpoint", "PullResult", "run_pull"]

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
    bulk: BulkRead | None = None  # the read in progress by a Bulk query job

    @classmethod
    def load(cls, client: redis.Redis, tenant: str, sobject: str, connection_id: str) -> PullCheckpoint:
        """The stored checkpoint, or a fresh one (none yet, another org's, or unreadable). One kept under an older
        spelling of the object is adopted first (callers hold the object's lock)."""
        adopt_legacy_checkpoint(client, tenant, sobject)
        raw = cast(bytes | str | None, client.hget(keys.pull_checkpoint(tenant, sobject), "state"))
        try:
            data = json.loads(raw) if raw else None
            stored = cls(**data) if isinstance(data, dict) else None
            if stored is not None and stored.bulk is not None:
                stored.bulk = BulkRead(**cast(dict[str, Any], stored.bulk))
        except (TypeError, ValueError):
            log.warning("checkpoint_unreadable", tenant=tenant, object=sobject)
            stored = None
        if stored is None or stored.connection_id != connection_id:
            return cls(connection_id=connection_id)
        stored._discard_unsafe(tenant, sobject)
        return stored

    def _discard_unsafe(self, tenant: str, sobject: str) -> None:
        """Drop a next page or Bulk read not in Salesforce's shape: the read goes on from the highest
        SystemModstamp delivered (the watermark, if none yet), skipping the Ids delivered there, so no record is
        missed or delivered twice by REST (a Bulk read starts again from where it began, as when its job is lost)."""
        if self.next_url is not None:
            try:
                next_records_path(self.next_url)
            except UnsafeRequest as exc:
                log.warning("checkpoint_discarded", tenant=tenant, object=sobject, part="next_url", reason=str(exc))
                self.next_url = None
        read = self.bulk
        if read is not None:
            try:
                bulk_api.check_job_id(read.job_id)
                if read.locator is not None:
                    bulk_api.check_locator(read.locator)
            except UnsafeRequest as exc:
                log.warning("checkpoint_discarded", tenant=tenant, object=sobject, part="bulk", reason=str(exc))
                self.run_high, self.run_boundary, self.bulk = read.since, read.skip, None

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
        if next_url is None:
            self.finish()

    def absorb(self, records: Sequence[dict[str, Any]]) -> None:
        """Account for delivered records in any order (a Bulk results page): keep the highest SystemModstamp
        and the Ids delivered at it."""
        for record in records:
            stamp = record["SystemModstamp"]
            if self.run_high is None or stamp > self.run_high:
                self.run_high, self.run_boundary = stamp, {}
            if stamp == self.run_high:
                self.run_boundary[record["Id"]] = stamp

    def finish(self) -> None:
        """The read is complete: its high mark becomes the watermark."""
        if self.run_high is not None:
            self.watermark, self.boundary = self.run_high, self.run_boundary
        self.next_url, self.bulk, self.run_high, self.run_boundary = None, None, None, {}

    def begin(self) -> None:
        """A new read starts at the watermark: the Ids already delivered there stay skipped for the whole read,
        however many pages share that SystemModstamp."""
        if self.run_high is None and self.watermark is not None:
            self.run_high, self.run_boundary = self.watermark, dict(self.boundary)

    def delivered_at_start(self) -> dict[str, str]:
        """Id -> SystemModstamp already delivered at the stamp the next query starts from."""
        return self.run_boundary if self.run_high is not None else self.boundary


@dataclass
class BulkRead:
    """A read by a Bulk query job, saved after each step so a stopped job goes on with the same job."""

    job_id: str
    since: str | None  # the SystemModstamp it reads from
    skip: dict[str, str]  # Id -> SystemModstamp delivered at ``since`` before the job
    polls: int = 0
    pages: int = 0  # results pages delivered
    locator: str | None = None  # the next results page (None before the first)
    requests: int = 1  # what the job has cost so far (its create, polls and pages), logged if it is lost


@dataclass(frozen=True)
class PullResult:
    """What one pull job did."""

    pages: int
    delivered: int


def _since(stamp: str | None) -> datetime | None:
    return datetime.strptime(stamp, SF_DATETIME) if stamp else None


@dataclass
class _Pull:
    sf: TenantSalesforce
    client: redis.Redis
    sink: Sink
    jobs: JobStore
    job_id: str
    sobject: str
    fields: Sequence[str]
    slice_over: Callable[[], bool]
    bulk: BulkOptions
    cp: PullCheckpoint
    pages: int = 0
    delivered: int = 0

    def deliver(self, records: Sequence[dict[str, Any]], skip: dict[str, str]) -> None:
        fresh = [r for r in records if skip.get(r["Id"]) != r["SystemModstamp"]]
        self.sink.deliver(self.sf.tenant, self.sobject, fresh)
        self.pages += 1
        self.delivered += len(fresh)
        self.jobs.progress(self.sf.tenant, self.job_id, records=len(fresh))

    def save(self) -> None:
        self.cp.save(self.client, self.sf.tenant, self.sobject)

    def result(self) -> PullResult:
        return PullResult(pages=self.pages, delivered=self.delivered)


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
    bulk: BulkOptions = NO_BULK,
) -> PullResult:
    """Pull ``sobject`` for ``sf.tenant`` from its checkpoint to the end, delivering each page to ``sink``.

    REST pages by default; a read that would cost fewer credits by Bulk API 2.0 (judged on the first page's
    ``totalSize``, per ``bulk.mode``) goes on with a Bulk query job. Raises ``SliceEnded`` between two pages
    or polls, after the checkpoint, once ``slice_over()`` says so."""
    pull = _Pull(sf, client, sink, jobs, job_id, sobject, fields, slice_over, bulk,
                 PullCheckpoint.load(client, sf.tenant, sobject, connection_id))
    while True:
        try:
            if pull.cp.bulk is not None or (bulk.mode == "always" and pull.cp.next_url is None
                                            and _bulk_allowed(pull)):
                return run_bulk_read(pull)
            return _rest_read(pull)
        except BulkJobLost as lost:
            _restart(pull, lost)


def _rest_read(pull: _Pull) -> PullResult:
    cp, tenant = pull.cp, pull.sf.tenant
    page, fresh_query = _page(pull.sf, cp, pull.sobject, pull.fields)
    while True:
        records = page.get("records", [])
        # Checked before delivery: a page whose successor cannot be followed is not delivered (nor checkpointed).
        following = None if page.get("done", True) else next_records_path(page.get("nextRecordsUrl"))
        pull.deliver(records, cp.delivered_at_start())
        cp.advance(records, following)
        pull.save()
        log.info("page_delivered", tenant=tenant, object=pull.sobject, records=len(records), done=cp.next_url is None)
        if cp.next_url is None:
            return pull.result()
        if fresh_query and pull.bulk.mode == "auto":
            remaining = int(page.get("totalSize", 0)) - len(records)
            fresh_query = False
            # A first page that is not the last holds the batch size Salesforce chose for this query.
            rest, bulk = rest_pull_cost(remaining, page_size=len(records)), bulk_pull_cost(remaining)
            if choose("auto", rest, bulk) == "bulk" and _bulk_allowed(pull):
                log.info("pull_by_bulk", tenant=tenant, object=pull.sobject, remaining=remaining,
                         rest_credits=rest, bulk_credits=bulk)
                cp.next_url = None
                return run_bulk_read(pull)
        if pull.slice_over():
            raise SliceEnded(f"pull of {pull.sobject} continues after {pull.pages} pages")
        page, fresh_query = _page(pull.sf, cp, pull.sobject, pull.fields)


def _bulk_allowed(pull: _Pull) -> bool:
    return pull.bulk.budgets is None or pull.bulk.budgets.allows_query(pull.sf)


def _restart(pull: _Pull, lost: BulkJobLost) -> None:
    """A Bulk read that cannot go on starts again from where it began (its pages may come again: the sink's
    de-duplication by Id and SystemModstamp applies)."""
    read = pull.cp.bulk
    assert read is not None
    log.warning("bulk_job_lost", tenant=pull.sf.tenant, object=pull.sobject, bulk_job=read.job_id,
                state=lost.state, detail=str(lost)[:200], credits_spent=read.requests)
    if lost.state not in ("Failed", "Aborted", "unknown to Salesforce"):
        with contextlib.suppress(SalesforceError):
            pull.sf.call(lambda s: bulk_api.abort_job(s, "query", read.job_id), what="bulk_query_abort")
    pull.cp.run_high, pull.cp.run_boundary = read.since, read.skip
    pull.cp.bulk = None
    pull.save()


def _next_page(sf: TenantSalesforce, next_url: str) -> dict[str, Any]:
    page: dict[str, Any] = sf.call(lambda s: s.query_more(next_url, identifier_is_url=True), what="query_more")
    return page


def _locator_gone(exc: SalesforceError) -> bool:
    """Salesforce no longer knows the query locator: 400 ``INVALID_QUERY_LOCATOR`` (expired, released, or
    never valid), or 404 for a next-records URL it cannot route."""
    return isinstance(exc, SalesforceResourceNotFound) or salesforce_error_code(exc)[0] == "INVALID_QUERY_LOCATOR"


def _page(sf: TenantSalesforce, cp: PullCheckpoint, sobject: str,
          fields: Sequence[str]) -> tuple[dict[str, Any], bool]:
    """The next page to deliver (by the stored locator, or by querying again if Salesforce no longer knows it),
    and whether it starts a new query (its ``totalSize`` is the whole read)."""
    if cp.next_url is not None:
        try:
            return _next_page(sf, cp.next_url), False
        except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
            if not _locator_gone(exc):
                raise
            # Read again from the highest SystemModstamp already delivered, skipping the Ids delivered at it.
            log.info("query_locator_expired", tenant=sf.tenant, object=sobject)
            cp.next_url = None
    cp.begin()
    query = pull_query(sobject, fields, _since(cp.run_high))
    first: dict[str, Any] = sf.call(lambda s: s.query(query), what="query")
    return first, True


def run_bulk_read(pull: _Pull) -> PullResult:
    """Read on (or start reading) with a Bulk query job: create it, poll it, deliver its results pages.

    The job's id, polls and results locator are checkpointed after each step, so a parked, killed or
    time-sliced pull goes on with the same job and never fetches a page twice. Salesforce returns the rows
    unordered (a Bulk query takes no ORDER BY), so the watermark moves only once the last page is in.
    """
    cp, sf = pull.cp, pull.sf
    if cp.bulk is None:
        cp.begin()
        since = cp.run_high
        soql = pull_query(pull.sobject, pull.fields, _since(since), ordered=False)
        try:
            info: dict[str, Any] = sf.call(lambda s: bulk_api.create_query_job(s, soql), what="bulk_query_create")
        except SalesforceMalformedRequest as exc:
            code, message = salesforce_error_code(exc)
            if code != "LIMIT_EXCEEDED" or pull.bulk.budgets is None:
                raise
            pull.bulk.budgets.spent("query_storage_mb" if "size" in message else "query_jobs", message)
            return _rest_read(pull)
        job_id = bulk_api.check_job_id(info.get("id"))  # stored, then used in paths
        cp.bulk = BulkRead(job_id=job_id, since=since, skip=dict(cp.delivered_at_start()))
        pull.save()
    read = cp.bulk
    if read.pages == 0:

        def saved(polls: int) -> None:
            read.polls, read.requests = polls, read.requests + 1
            pull.save()

        wait_for_job(sf, "query", read.job_id, polls=read.polls, options=pull.bulk, slice_over=pull.slice_over,
                     saved=saved)
    while True:
        try:
            page = sf.call(lambda s: bulk_api.query_results(s, read.job_id, read.locator, BULK_RESULTS_PAGE),
                           what="bulk_query_results")
        except SalesforceResourceNotFound as exc:
            raise BulkJobLost(read.job_id, "unknown to Salesforce") from exc
        records = read_records(page.csv)
        pull.deliver(records, read.skip)
        cp.absorb(records)
        read.pages, read.locator, read.requests = read.pages + 1, page.locator, read.requests + 1
        if page.locator is None:
            cp.finish()
        pull.save()
        log.info("bulk_page_delivered", tenant=sf.tenant, object=pull.sobject, bulk_job=read.job_id,
                 records=len(records), done=cp.bulk is None)
        if cp.bulk is None:
            return pull.result()
        if pull.slice_over():
            raise SliceEnded(f"pull of {pull.sobject} continues with Bulk job {read.job_id}'s next page")
