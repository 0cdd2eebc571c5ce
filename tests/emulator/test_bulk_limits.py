"""Bulk API 2.0 metering: every request counts, the rolling bulk budgets, their refusals, faults on /jobs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from simple_salesforce.api import Salesforce

from emulator import AdminClient, EmulatorServer
from tests.emulator.conftest import FakeClock, bulk2, csv_records, ingest_job, query_job, salesforce

Api = Callable[..., requests.Response]
DAY = 24 * 3600


def _limit(api: Api, name: str) -> dict[str, int]:
    entry: dict[str, int] = api("GET", "limits/").json()[name]
    return entry


@pytest.mark.usefixtures("instant_bulk")
def test_every_jobs_request_counts_like_rest_failures_included(emu: EmulatorServer, api: Api) -> None:
    job_id = query_job(api, "SELECT Id FROM Lead")
    responses = [
        api("GET", f"jobs/query/{job_id}"),
        api("GET", f"jobs/query/{job_id}/results"),
        api("GET", "jobs/query/750000000000000AAA"),
        api("POST", "jobs/query", json={"operation": "query", "query": "SELEC"}),
        api("PUT", "jobs/query"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 400, 405]
    assert [r.headers["Sforce-Limit-Info"] for r in responses] == [f"api-usage={n}/1000" for n in range(2, 7)]
    assert _limit(api, "DailyApiRequests") == {"Max": 1000, "Remaining": 993}
    log = emu.control.request_log("acme")
    assert [(e["method"], e["path"].split("/v59.0/")[1], e["status"], e["counted"]) for e in log[:6]] == [
        ("POST", "jobs/query", 200, True), ("GET", f"jobs/query/{job_id}", 200, True),
        ("GET", f"jobs/query/{job_id}/results", 200, True), ("GET", "jobs/query/750000000000000AAA", 404, True),
        ("POST", "jobs/query", 400, True), ("PUT", "jobs/query", 405, True)]


@pytest.mark.usefixtures("instant_bulk")
def test_simple_salesforce_polls_and_result_pages_are_all_counted(emu: EmulatorServer, sf: Salesforce) -> None:
    pages = list(bulk2(sf).Lead.query("SELECT Id FROM Lead", max_records=5, wait=0))
    bulk2(sf).Lead.insert(records=[{"LastName": "Counted", "Company": "C"}], wait=0)
    counts = emu.control.request_counts("acme")
    assert len(pages) == 4
    assert sum(v for k, v in counts.items() if k.endswith("/results")) == 4
    assert sum(counts.values()) == emu.control.usage("acme")["used"] == len(emu.control.request_log("acme"))
    assert sum(v for k, v in counts.items() if k.startswith("GET") and "/jobs/" in k) >= 6  # polls count too


@pytest.mark.usefixtures("instant_bulk")
def test_query_jobs_budget_refuses_past_its_max_and_frees_up_after_a_day(emu: EmulatorServer, api: Api,
                                                                         clock: FakeClock) -> None:
    assert _limit(api, "DailyBulkV2QueryJobs") == {"Max": 10000, "Remaining": 10000}
    emu.control.set_bulk_limits("acme", query_jobs=2)
    api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Nope FROM Lead"})  # refused: free
    query_job(api, "SELECT Id FROM Lead")
    query_job(api, "SELECT Id FROM Account")
    assert _limit(api, "DailyBulkV2QueryJobs") == {"Max": 2, "Remaining": 0}
    refused = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Lead"})
    assert (refused.status_code, refused.json()) == (400, [{
        "errorCode": "LIMIT_EXCEEDED", "message": "Max bulk v2 query jobs (2) per 24 hrs has been reached (3)"}])
    assert emu.control.bulk_usage("acme")["query_jobs"] == {"used": 2, "max": 2}
    clock.advance(DAY)
    emu.control.issue_token("acme")  # the fixture's token lived an hour
    fresh = salesforce(emu)
    assert fresh.restful("limits/")["DailyBulkV2QueryJobs"] == {"Max": 2, "Remaining": 2}
    assert fresh.restful("jobs/query", method="POST", json={"operation": "query", "query": "SELECT Id FROM Lead"})


@pytest.mark.usefixtures("instant_bulk")
def test_query_results_take_file_storage(emu: EmulatorServer, api: Api) -> None:
    assert _limit(api, "DailyBulkV2QueryFileStorageMB") == {"Max": 976562, "Remaining": 976562}
    job_id = query_job(api, "SELECT Id, Name FROM Lead")
    assert api("GET", f"jobs/query/{job_id}").json()["state"] == "JobComplete"
    assert _limit(api, "DailyBulkV2QueryFileStorageMB") == {"Max": 976562, "Remaining": 976561}
    assert emu.control.bulk_usage("acme")["query_storage_mb"] == {"used": 1, "max": 976562}
    emu.control.set_bulk_limits("acme", query_storage_mb=0)
    refused = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Lead"})
    assert (refused.status_code, refused.json()) == (400, [{
        "errorCode": "LIMIT_EXCEEDED",
        "message": "Max bulk v2 query result size stored (0) kb per 24 hrs has been exceeded"}])
    assert _limit(api, "DailyBulkApiBatches") == {"Max": 15000, "Remaining": 15000}  # queries take no batches


@pytest.mark.usefixtures("instant_bulk")
def test_ingest_takes_a_batch_per_10000_records_and_fails_past_the_budget(emu: EmulatorServer, sf: Salesforce,
                                                                          api: Api, clock: FakeClock) -> None:
    small = ingest_job(api, "Lead", "insert", "LastName,Company\nOne,Batch\n")
    assert api("GET", f"jobs/ingest/{small}").json()["state"] == "JobComplete"
    assert _limit(api, "DailyBulkApiBatches") == {"Max": 15000, "Remaining": 14999}
    emu.control.set_bulk_limits("acme", batches=2)
    rows = "".join(f"Bulk{i},Load\n" for i in range(10_001))
    job_id = ingest_job(api, "Lead", "insert", "LastName,Company\n" + rows)
    info = api("GET", f"jobs/ingest/{job_id}").json()
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("Failed", 10_000, 0)
    assert info["errorMessage"] == "ExceededQuota : Max bulk API batches (2) per 24 hrs has been reached"
    assert csv_records(api("GET", f"jobs/ingest/{job_id}/unprocessedrecords").text) == [
        {"LastName": "Bulk10000", "Company": "Load"}]
    assert sf.query("SELECT Id FROM Lead WHERE Company = 'Load'")["totalSize"] == 10_000
    assert _limit(api, "DailyBulkApiBatches") == {"Max": 2, "Remaining": 0}
    assert emu.control.bulk_usage("acme")["batches"] == {"used": 2, "max": 2}
    clock.advance(DAY)
    assert emu.control.bulk_usage("acme")["batches"] == {"used": 0, "max": 2}
    emu.control.issue_token("acme")  # the fixture's token lived an hour
    (again,) = bulk2(salesforce(emu)).Lead.insert(records=[{"LastName": "Next", "Company": "Day"}], wait=0)
    assert (again["numberRecordsProcessed"], again["numberRecordsFailed"]) == (1, 0)


@pytest.mark.usefixtures("instant_bulk")
def test_injected_faults_hit_jobs_paths(emu: EmulatorServer, api: Api) -> None:
    emu.control.inject_fault("acme", "http503")
    failed = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Lead"})
    assert (failed.status_code, failed.json()[0]["errorCode"]) == (503, "SERVER_UNAVAILABLE")
    assert api("GET", "jobs/query").json()["records"] == []  # the faulted request created nothing
    job_id = query_job(api, "SELECT Id FROM Lead")
    emu.control.inject_fault("acme", "drop")
    with pytest.raises(requests.ConnectionError):
        api("GET", f"jobs/query/{job_id}/results")
    assert api("GET", f"jobs/query/{job_id}/results").headers["Sforce-NumberOfRecords"] == "20"
    assert [e["fault"] for e in emu.control.request_log("acme")] == ["http503", None, None, "drop", None]
    assert emu.control.usage("acme")["used"] == 5


def test_jobs_keep_processing_while_the_org_is_over_its_api_limit(emu: EmulatorServer, api: Api,
                                                                  clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 10)
    job_id = query_job(api, "SELECT Id FROM Lead")
    emu.control.set_limit("acme", 1)
    refused = api("GET", f"jobs/query/{job_id}")
    assert (refused.status_code, refused.json()[0]["errorCode"]) == (403, "REQUEST_LIMIT_EXCEEDED")
    clock.advance(5)
    emu.control.set_limit("acme", 1000)
    assert api("GET", f"jobs/query/{job_id}").json()["state"] == "JobComplete"


def test_bulk_controls_over_the_admin_path(emu: EmulatorServer, clock: FakeClock) -> None:
    client = AdminClient(emu.admin_url, emu.admin_token, emu.ca_bundle)
    try:
        client.set_bulk_limits("globex", batches=7, query_jobs=3, query_storage_mb=5)
        assert client.bulk_usage("globex") == {"batches": {"used": 0, "max": 7},
                                               "query_jobs": {"used": 0, "max": 3},
                                               "query_storage_mb": {"used": 0, "max": 5}}
        client.set_bulk_rate("globex", 0)
        sf = salesforce(emu, "globex")
        assert len(next(iter(bulk2(sf).Case.query("SELECT Id FROM Case", wait=0))).splitlines()) == 21
        assert client.bulk_usage("globex")["query_jobs"]["used"] == 1
        with pytest.raises(ValueError, match=">= 0"):
            client.set_bulk_rate("globex", -1)
        with pytest.raises(ValueError, match=">= 0"):
            client.set_bulk_limits("globex", batches=-1)
        with pytest.raises(KeyError):
            client.bulk_usage("nobody")
    finally:
        client.close()


def test_the_processing_rate_is_a_server_option(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="bulk_rate"):
        EmulatorServer(orgs=["acme"], bulk_rate=-1)
    with EmulatorServer(orgs=["acme"], records=3, clock=clock, bulk_rate=0) as emu:
        sf = salesforce(emu)
        job = sf.restful("jobs/query", method="POST", json={"operation": "query", "query": "SELECT Id FROM Lead"})
        # Processing needs no clock time at this rate: the next request already sees the job done.
        assert sf.restful(f"jobs/query/{job['id']}")["state"] == "JobComplete"
        added = emu.control.add_org("initech", records=1)
        assert added.name == "initech"
        other = salesforce(emu, "initech")
        job = other.restful("jobs/query", method="POST", json={"operation": "query", "query": "SELECT Id FROM Lead"})
        assert other.restful(f"jobs/query/{job['id']}")["state"] == "JobComplete"
