"""What real orgs do that an ideal one would not, through real worker processes and the emulator over HTTPS:
a query cursor released while the pull was parked, pages of 200 for two long text fields, the same external id
twice in one sObject Collections upsert. The emulator's count of the tenant's requests equals its credits.
"""

from __future__ import annotations

import math

from tests.e2e.conftest import Tenant, Workers
from tests.e2e.test_worker_jobs import delivered, salesforce
from worker.enqueue import enqueue_pull

LONG_TEXT = ["Notes__c", "Profile__c"]  # two long text areas: Salesforce pages such a query by 200


def _refused_locators(tenant: Tenant) -> int:
    return sum(1 for e in tenant.emulator.control.request_log(tenant.org.name)
               if e["status"] == 400 and "/query/" in e["path"])


def test_a_pull_whose_cursor_was_released_while_parked_delivers_each_record_once(workers: Workers,
                                                                                   make_tenant) -> None:
    tenant = make_tenant(records=4_500)  # pages of 2,000, 2,000 and 500
    tenant.bucket.take(tenant.name, 100_000 - 1)  # a credit for the first page only
    first = tenant.pull()
    assert (first.state, first.records, first.credits) == ("parked", 2_000, 1)
    # One cursor per user, and another client of the same user opens one: the parked pull's cursor is released.
    tenant.emulator.control.set_query_cursors(tenant.org.name, limit=1)
    assert salesforce(tenant).query("SELECT Id FROM Lead")["done"] is False

    tenant.bucket.set_limit(tenant.name, 100_010, actor="e2e")  # the parked job resumes by itself
    done = tenant.wait_done(first.job_id)

    assert (done.state, done.records) == ("done", 4_500)
    records = delivered(workers, tenant)
    assert len(records) == len({r["Id"] for r in records}) == 4_500  # none skipped, none twice
    assert _refused_locators(tenant) == 1  # the refused next page, paid like any request
    assert done.credits == tenant.used_credits() - 99_999 == tenant.counted_requests() - 1  # less the other's query


def test_a_pull_of_two_long_text_fields_pays_a_page_per_200_records(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=600)  # small enough that REST (3 pages) is no dearer than Bulk
    job_id = enqueue_pull(tenant.client, tenant.name, "Lead", LONG_TEXT)
    job = tenant.wait_done(job_id)

    assert (job.state, job.records) == ("done", 600)
    records = delivered(workers, tenant)
    assert len(records) == len({r["Id"] for r in records}) == 600
    assert job.credits == tenant.used_credits() == tenant.counted_requests() == math.ceil(600 / 200)


def test_the_same_external_id_twice_in_one_push_fails_both_and_the_rest_are_upserted(workers: Workers,
                                                                                      make_tenant) -> None:
    tenant = make_tenant(records=0)
    rows = [{"External_Id__c": ext, "LastName": f"Doe {i}", "Company": "Acme"}
            for i, ext in enumerate(["a", "twice", "b", "twice", "c"])]
    job = tenant.push(rows)

    assert (job.state, job.records, job.failed_records, job.credits) == ("done", 3, 2, 1)
    assert [(e["index"], e["external_id"]) for e in job.errors] == [(1, "twice"), (3, "twice")]
    for error in job.errors:
        [reason] = error["errors"]
        assert reason["statusCode"] == "DUPLICATE_VALUE"
        assert "twice" in reason["message"]
        assert reason["fields"] == ["External_Id__c"]
    found = salesforce(tenant).query("SELECT External_Id__c FROM Lead")["records"]
    assert sorted(r["External_Id__c"] for r in found) == ["a", "b", "c"]
    assert tenant.used_credits() == tenant.counted_requests() - 1  # less the test's own query
