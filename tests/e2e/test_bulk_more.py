"""Bulk API 2.0 end to end under ``CRMSYNC_BULK=always``: real worker processes send even small jobs by Bulk, and
jobs whose Salesforce job fails as a whole still deliver or write every record once, with credits equal to the
emulator's count of the tenant's requests.

The module's worker pool runs with ``CRMSYNC_BULK=always`` (the ``worker_env`` fixture below extends the e2e one);
the helpers are ``test_bulk_jobs``'s. Each test runs on its own tenant and org, at bulk rate 0 (a job is done by the
next request), so the number of polls, and so every count below, is exact.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import Tenant, Workers
from tests.e2e.test_bulk_jobs import (
    by_external_id,
    calls,
    delivered,
    delivered_once,
    lead_rows,
    log_events,
    salesforce,
)
from worker.enqueue import PUSH_ACTOR, send_job
from worker.jobs.state import JobStore
from worker.notifications import recent

TIMEOUT = 180


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "CRMSYNC_BULK": "always"}


def recent_kinds(tenant: Tenant, kind: str) -> list[Any]:
    return [n for n in recent(tenant.client, tenant.name, limit=100) if n.kind == kind]


def _query_jobs(tenant: Tenant) -> list[Any]:
    """The org's query jobs, oldest first (read in-process: no counted request)."""
    with tenant.emulator.registry.lock:
        return list(tenant.emulator.registry.org(tenant.org.name).bulk.of_kind("query"))


def test_always_sends_a_small_pull_and_a_small_push_by_bulk(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=50)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    pulled = tenant.pull(timeout=TIMEOUT)
    assert (pulled.state, pulled.records) == ("done", 50), pulled
    delivered_once(workers, tenant, 50)
    assert calls(tenant, "GET", "query/?") == 0  # not even a first REST page
    assert calls(tenant, "POST", "jobs/query") == 1
    assert calls(tenant, "GET", r"jobs/query/\w+/results") == 1
    # /limits (the Bulk budgets), create, one poll, one results page: where REST would take 1.
    assert pulled.credits == tenant.used_credits() == tenant.counted_requests() == 4

    before = tenant.counted_requests()
    pushed = tenant.push(lead_rows("aw-", 20), timeout=TIMEOUT)
    assert (pushed.state, pushed.records, pushed.failed_records) == ("done", 20, 0), pushed
    assert calls(tenant, "POST", "jobs/ingest") == calls(tenant, "PUT", r"jobs/ingest/\w+/batches") == 1
    assert calls(tenant, "PATCH", "composite/.*") == 0
    assert calls(tenant, "GET", "limits/?") == 1  # the budgets read by the pull are kept
    # Create, upload, close, one poll (no failedResults: none failed).
    assert pushed.credits == tenant.counted_requests() - before == 4
    assert tenant.used_credits() == tenant.counted_requests() == 8
    found = by_external_id(tenant, "aw-", "LastName")
    assert {key: [r["LastName"] for r in records] for key, records in found.items()} == {
        f"aw-{i}": [f"Doe {i}"] for i in range(20)}


def test_a_push_whose_ingest_job_fails_as_a_whole_goes_on_by_rest_once(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    rows = lead_rows("wf-", 450)
    bad = (3, 250, 449)
    for i in bad:  # a field the org does not have: the CSV's header names it, so the whole job fails
        rows[i]["Bogus__c"] = f"x{i}"
    job = tenant.push(rows, timeout=TIMEOUT)
    assert (job.state, job.records, job.failed_records) == ("done", 450 - len(bad), len(bad)), job

    (ingest,) = _ingest_jobs(tenant)
    assert (ingest.state, ingest.error_message, ingest.processed) == (
        "Failed", "InvalidBatch : Field name not found : Bogus__c", 0)
    lost = log_events(workers, tenant, "bulk_job_lost")
    assert [(e["bulk_job"], e["state"]) for e in lost] == [(ingest.id, "Failed")]
    assert "Field name not found" in lost[0]["detail"]
    assert [e["records"] for e in log_events(workers, tenant, "bulk_push_unprocessed")] == [450]
    # Every record went on by REST, in its place in the push: the three naming the field fail there, one by one.
    assert calls(tenant, "PATCH", "composite/sobjects/Lead/External_Id__c") == 3
    errors = sorted(job.errors, key=lambda e: e["index"])
    assert [(e["index"], e["external_id"]) for e in errors] == [(i, f"wf-{i}") for i in bad]
    for error in errors:
        assert error["errors"][0]["statusCode"] == "INVALID_FIELD"
        assert "Bogus__c" in error["errors"][0]["message"]
    # /limits, create, upload, close, one poll, failedResults, unprocessedrecords, three collections.
    assert job.credits == tenant.used_credits() == tenant.counted_requests() == 10
    found = by_external_id(tenant, "wf-")
    assert set(found) == {f"wf-{i}" for i in range(450) if i not in bad}
    assert all(len(records) == 1 for records in found.values())


def _ingest_jobs(tenant: Tenant) -> list[Any]:
    with tenant.emulator.registry.lock:
        return list(tenant.emulator.registry.org(tenant.org.name).bulk.of_kind("ingest"))


def test_a_pull_whose_query_job_fails_queries_again_from_the_watermark(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=300)
    org = tenant.org.name
    tenant.emulator.control.set_bulk_rate(org, 0)
    tenant.emulator.control.fail_query_job(org)  # the first read's job fails too: it starts again from nothing
    first = tenant.pull(timeout=TIMEOUT)
    assert (first.state, first.records) == ("done", 300)
    records = delivered_once(workers, tenant, 300)
    # /limits, the failed job's create and poll, the new job's create, poll and results page.
    assert first.credits == tenant.used_credits() == tenant.counted_requests() == 6
    sf = salesforce(tenant)
    changed = sorted(r["Id"] for r in records[100:110])
    for record_id in changed:
        sf.Lead.update(record_id, {"Title": "Changed"})
    before, used = tenant.counted_requests(), tenant.used_credits()

    tenant.emulator.control.fail_query_job(org)  # the next query job ends Failed at its first poll
    again = tenant.pull(timeout=TIMEOUT)
    assert (again.state, again.records) == ("done", 10), again
    assert sorted(r["Id"] for r in delivered(workers, tenant)[300:]) == changed  # each once, nothing else

    jobs = _query_jobs(tenant)
    assert [j.state for j in jobs] == ["Failed", "JobComplete", "Failed", "JobComplete"]
    assert len(jobs[0].rows) == len(jobs[1].rows) == 300
    failed, recreated = jobs[2], jobs[3]
    assert failed.error_message == "Retried more than 15 times"
    # The new job reads from the same watermark: the same rows as the failed one would have given.
    assert [r[0] for r in failed.rows] == [r[0] for r in recreated.rows]
    assert len(failed.rows) >= 10  # the changed ones, and those at the watermark (skipped as delivered)
    lost = log_events(workers, tenant, "bulk_job_lost")
    assert [(e["bulk_job"], e["state"]) for e in lost] == [(jobs[0].id, "Failed"), (failed.id, "Failed")]
    assert all("Retried more than 15 times" in e["detail"] for e in lost)
    assert [e["credits_spent"] for e in lost] == [2, 2]  # each one's create and the poll that found it Failed
    assert calls(tenant, "PATCH", r"jobs/query/\w+") == 0  # a Failed job is not aborted
    # Create and poll of the failed job, then create, poll and one results page of the new one.
    assert again.credits == tenant.counted_requests() - before == tenant.used_credits() - used == 5


def test_a_push_message_delivered_again_after_the_job_is_done_changes_nothing(workers: Workers,
                                                                               make_tenant) -> None:
    # Delivery is at least once: a worker killed after its job ended but before the broker heard of it, or a live
    # worker taken for dead, has its message delivered again. The job is done: it must stay so, its records sent once.
    tenant: Tenant = make_tenant(records=0)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    job = tenant.push(lead_rows("again-", 20), timeout=TIMEOUT)
    assert (job.state, job.records) == ("done", 20), job
    before = tenant.counted_requests()
    send_job(PUSH_ACTOR, {"tenant": tenant.name, "sobject": "Lead", "external_id": "External_Id__c",
                          "job_id": job.job_id, "seq": 1})
    jobs = JobStore(tenant.client)

    def handled() -> bool:
        record = jobs.get(tenant.name, job.job_id)
        return bool(log_events(workers, tenant, "job_already_done")) or record is None or record.state != "done"

    wait_until(handled, TIMEOUT, "the message delivered again to be handled")
    again = jobs.get(tenant.name, job.job_id)
    assert again is not None
    assert (again.state, again.records, again.credits, again.error) == ("done", 20, job.credits, job.error), again
    assert tenant.counted_requests() == before
    assert not recent_kinds(tenant, "job_failed")
