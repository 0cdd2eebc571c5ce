"""Bulk API 2.0 query jobs: simple-salesforce's bulk2, the job lifecycle on the emulator clock, CSV results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from simple_salesforce.api import Salesforce

from emulator import AdminClient, EmulatorServer
from emulator.sftime import format_epoch
from tests.emulator.conftest import START, FakeClock, bulk2, csv_records, query_job

Api = Callable[..., requests.Response]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


def _info(api: Api, job_id: str) -> dict[str, object]:
    response = api("GET", f"jobs/query/{job_id}")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


@pytest.mark.usefixtures("instant_bulk")
def test_simple_salesforce_bulk2_query_pages_through_every_lead(sf: Salesforce) -> None:
    pages = [str(page) for page in bulk2(sf).Lead.query("SELECT Id, LastName, Company FROM Lead", max_records=8,
                                                        wait=0)]
    assert len(pages) == 3
    rows = [row for page in pages for row in csv_records(page)]
    assert [len(csv_records(page)) for page in pages] == [8, 8, 4]
    assert list(rows[0]) == ["Id", "LastName", "Company"]
    rest = sf.query("SELECT Id, LastName, Company FROM Lead")["records"]
    assert [(r["Id"], r["LastName"], r["Company"]) for r in rows] == [
        (r["Id"], r["LastName"], r["Company"]) for r in rest]


@pytest.mark.usefixtures("instant_bulk")
def test_simple_salesforce_bulk2_download_writes_one_file_per_set(sf: Salesforce, tmp_path: Path) -> None:
    results = bulk2(sf).Account.download("SELECT Id, Name FROM Account", path=str(tmp_path), max_records=15, wait=0)
    assert [r["number_of_records"] for r in results] == [15, 5]
    assert results[-1]["locator"] == ""
    names = [row["Name"] for r in results for row in csv_records(Path(r["file"]).read_text())]
    assert len(names) == 20 == len(set(names))


def test_query_job_moves_through_its_states_on_the_emulator_clock(emu: EmulatorServer, api: Api,
                                                                  clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 10)  # 20 leads: two seconds of processing
    created = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Lead"})
    assert created.status_code == 200
    job = created.json()
    assert job == {
        "id": job["id"], "operation": "query", "object": "Lead", "createdById": "005000000000001AAA",
        "createdDate": format_epoch(START), "systemModstamp": format_epoch(START), "state": "UploadComplete",
        "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": 59.0, "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }
    assert job["id"].startswith("750")
    assert len(job["id"]) == 18
    assert _info(api, job["id"])["state"] == "UploadComplete"  # the clock has not moved: still queued
    clock.advance(0.5)
    running = _info(api, job["id"])
    assert (running["state"], running["numberRecordsProcessed"]) == ("InProgress", 5)
    assert api("GET", f"jobs/query/{job['id']}/results").status_code == 400
    clock.advance(1.5)
    done = _info(api, job["id"])
    assert done == {
        **job, "systemModstamp": format_epoch(START + 2), "state": "JobComplete", "jobType": "V2Query",
        "numberRecordsProcessed": 20, "retries": 0, "totalProcessingTime": 2000, "isPkChunkingSupported": True,
    }


@pytest.mark.usefixtures("instant_bulk")
def test_results_are_paged_by_max_records_and_locator(emu: EmulatorServer, api: Api) -> None:
    job_id = query_job(api, "SELECT Id, Name FROM Lead ORDER BY Name")
    first = api("GET", f"jobs/query/{job_id}/results", params={"maxRecords": 8})
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("text/csv")
    assert first.headers["Sforce-NumberOfRecords"] == "8"
    assert first.headers["Sforce-Locator"] not in ("", "null")
    assert first.text.split("\n")[0] == '"Id","Name"'
    seen, locator, pages = csv_records(first.text), first.headers["Sforce-Locator"], 1
    again = api("GET", f"jobs/query/{job_id}/results", params={"maxRecords": 8, "locator": locator})
    while locator != "null":
        page = api("GET", f"jobs/query/{job_id}/results", params={"maxRecords": 8, "locator": locator})
        seen += csv_records(page.text)
        locator, pages = page.headers["Sforce-Locator"], pages + 1
    assert pages == 3
    assert [r["Id"] for r in seen] == [r["Id"] for r in csv_records(
        api("GET", f"jobs/query/{job_id}/results").text)]
    # A locator keeps naming the same set as long as the job exists.
    assert again.text == api("GET", f"jobs/query/{job_id}/results",
                             params={"maxRecords": 8, "locator": first.headers["Sforce-Locator"]}).text
    whole = api("GET", f"jobs/query/{job_id}/results")
    assert (whole.headers["Sforce-NumberOfRecords"], whole.headers["Sforce-Locator"]) == ("20", "null")
    bad = api("GET", f"jobs/query/{job_id}/results", params={"locator": "not-a-locator"})
    assert (bad.status_code, bad.json()[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")
    assert api("GET", f"jobs/query/{job_id}/results", params={"maxRecords": 0}).status_code == 400
    # Results are read with the API version the job was created with.
    assert api("GET", f"{emu.base_url}/services/data/v60.0/jobs/query/{job_id}/results").status_code == 409


@pytest.mark.usefixtures("instant_bulk")
def test_results_csv_quotes_commas_quotes_newlines_and_writes_nulls_empty(sf: Salesforce, api: Api) -> None:
    tricky = 'Smith, "Jr"\nthe second'
    sf.Lead.create({"LastName": tricky, "Company": "Q|Co", "External_Id__c": "TRICKY"})
    sf.Lead.create({"LastName": "Plain", "Company": "P", "External_Id__c": "PLAIN"})
    job_id = query_job(api, "SELECT LastName, Company, Email, IsConverted FROM Lead WHERE External_Id__c IN "
                            "('TRICKY', 'PLAIN') ORDER BY LastName", columnDelimiter="PIPE", lineEnding="CRLF")
    text = api("GET", f"jobs/query/{job_id}/results").text
    assert text == ('"LastName"|"Company"|"Email"|"IsConverted"\r\n"Plain"|"P"|""|"false"\r\n'
                    '"Smith, ""Jr""\nthe second"|"Q|Co"|""|"false"\r\n')
    assert csv_records(text, delimiter="|")[1]["LastName"] == tricky


@pytest.mark.usefixtures("instant_bulk")
def test_query_all_sees_deleted_records_and_query_does_not(sf: Salesforce, api: Api) -> None:
    victim = sf.query("SELECT Id FROM Case LIMIT 1")["records"][0]["Id"]
    sf.Case.delete(victim)
    ids = {}
    for operation in ("query", "queryAll"):
        job_id = query_job(api, "SELECT Id, IsDeleted FROM Case", operation=operation)
        ids[operation] = {r["Id"]: r["IsDeleted"] for r in csv_records(
            api("GET", f"jobs/query/{job_id}/results").text)}
    assert victim not in ids["query"]
    assert len(ids["query"]) == 19
    assert ids["queryAll"][victim] == "true"
    assert len(ids["queryAll"]) == 20


def test_abort_and_delete_follow_the_documented_states(emu: EmulatorServer, api: Api, clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 10)
    running = query_job(api, "SELECT Id FROM Lead")
    clock.advance(1)
    refused = api("DELETE", f"jobs/query/{running}")
    assert (refused.status_code, refused.json()) == (400, [{
        "errorCode": "API_ERROR", "message": "Error encountered when deleting the job because the job is not "
                                             "terminated"}])
    aborted = api("PATCH", f"jobs/query/{running}", json={"state": "Aborted"})
    assert (aborted.status_code, aborted.json()["state"]) == (200, "Aborted")
    clock.advance(60)
    assert _info(api, running)["state"] == "Aborted"  # no more processing
    assert api("PATCH", f"jobs/query/{running}", json={"state": "Aborted"}).json() == [{
        "errorCode": "INVALIDJOBSTATE", "message": "Aborting already Aborted Job not allowed"}]
    assert api("GET", f"jobs/query/{running}/results").status_code == 400
    finished = query_job(api, "SELECT Id FROM Lead")
    clock.advance(60)
    again = api("PATCH", f"jobs/query/{finished}", json={"state": "Aborted"})
    assert (again.status_code, again.json()) == (400, [{
        "errorCode": "INVALIDJOBSTATE", "message": "Aborting already Completed Job not allowed"}])
    assert api("PATCH", f"jobs/query/{finished}", json={"state": "UploadComplete"}).status_code == 400
    for job_id in (running, finished):
        assert api("DELETE", f"jobs/query/{job_id}").status_code == 204
        gone = api("GET", f"jobs/query/{job_id}")
        assert (gone.status_code, gone.json()) == (404, NOT_FOUND)


def test_bad_query_jobs_are_refused_when_created(emu: EmulatorServer, api: Api) -> None:
    malformed = api("POST", "jobs/query", json={"operation": "query", "query": "SELEC Id FROM Lead"})
    assert (malformed.status_code, malformed.json()[0]["errorCode"]) == (400, "MALFORMED_QUERY")
    unknown = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Nope FROM Lead"})
    assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    for body in ({"operation": "select", "query": "SELECT Id FROM Lead"},
                 {"operation": "query", "query": "SELECT Id FROM Lead", "columnDelimiter": "SPACE"},
                 {"operation": "query", "query": "SELECT Id FROM Lead", "lineEnding": "CR"},
                 {"operation": "query", "query": "SELECT Id FROM Lead", "contentType": "JSON"}):
        refused = api("POST", "jobs/query", json=body)
        assert (refused.status_code, refused.json()[0]["errorCode"]) == (400, "JSON_PARSER_ERROR")
    assert api("POST", "jobs/query", json={"operation": "query"}).status_code == 400
    assert api("GET", "jobs/query/750000000000000AAA").json() == NOT_FOUND
    assert api("PUT", "jobs/query").status_code == 405
    old = api("POST", f"{emu.base_url}/services/data/v46.0/jobs/query",
              json={"operation": "query", "query": "SELECT Id FROM Lead"})
    assert old.status_code == 404  # query jobs arrived in API 47.0


@pytest.mark.usefixtures("instant_bulk")
def test_jobs_are_listed_and_named_in_the_resources(api: Api) -> None:
    first, second = query_job(api, "SELECT Id FROM Lead"), query_job(api, "SELECT Id FROM Account")
    listed = api("GET", "jobs/query").json()
    assert listed["done"] is True
    assert listed["nextRecordsUrl"] is None
    assert [(r["id"], r["object"], r["jobType"]) for r in listed["records"]] == [
        (first, "Lead", "V2Query"), (second, "Account", "V2Query")]
    assert api("GET", "jobs/ingest").json()["records"] == []
    assert api("GET", "").json()["jobs"] == "/services/data/v59.0/jobs"


# -- controls: a failing query job, a running job's rate, a cap on results sets ------------------------------------


def test_the_next_query_job_can_be_made_to_fail_with_its_error_message(emu: EmulatorServer, api: Api,
                                                                      clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 10)
    emu.control.fail_query_job("acme")  # the next query job created, and only that one
    doomed = query_job(api, "SELECT Id FROM Lead")
    spared = query_job(api, "SELECT Id FROM Account")
    failed = _info(api, doomed)
    assert (failed["state"], failed["errorMessage"], failed["numberRecordsProcessed"]) == (
        "Failed", "Retried more than 15 times", 0)
    assert "errorMessage" not in _info(api, spared)
    refused = api("GET", f"jobs/query/{doomed}/results")
    assert (refused.status_code, refused.json()[0]["errorCode"]) == (400, "INVALIDJOBSTATE")
    clock.advance(60)
    assert _info(api, doomed)["state"] == "Failed"  # nothing more happens to it
    assert _info(api, spared)["state"] == "JobComplete"
    assert api("PATCH", f"jobs/query/{doomed}", json={"state": "Aborted"}).json() == [{
        "errorCode": "INVALIDJOBSTATE", "message": "Aborting already Failed Job not allowed"}]
    assert api("DELETE", f"jobs/query/{doomed}").status_code == 204
    assert emu.control.bulk_usage("acme")["query_jobs"]["used"] == 2  # a failed job still took its budget


def test_a_named_running_query_job_can_be_made_to_fail(emu: EmulatorServer, api: Api, clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 10)
    job_id = query_job(api, "SELECT Id FROM Lead")
    clock.advance(1)
    assert _info(api, job_id)["numberRecordsProcessed"] == 10
    emu.control.fail_query_job("acme", job_id, message="QUERY_TIMEOUT : Your query request was running for too long.")
    clock.advance(60)  # it would have completed by now
    failed = _info(api, job_id)
    assert (failed["state"], failed["numberRecordsProcessed"]) == ("Failed", 10)
    assert failed["errorMessage"] == "QUERY_TIMEOUT : Your query request was running for too long."
    with pytest.raises(ValueError, match="Failed"):  # only a queued or running job can be made to fail
        emu.control.fail_query_job("acme", job_id)
    with pytest.raises(KeyError):
        emu.control.fail_query_job("acme", "750000000000000AAA")
    # Through the admin path too, as another process drives it.
    admin = AdminClient(emu.admin_url, emu.admin_token, emu.ca_bundle)
    try:
        admin.fail_query_job("acme")
        assert _info(api, query_job(api, "SELECT Id FROM Lead"))["state"] == "Failed"
        with pytest.raises(KeyError):
            admin.fail_query_job("acme", "750000000000000AAA")
    finally:
        admin.close()


def test_a_running_job_goes_on_at_a_new_rate_from_what_it_processed(emu: EmulatorServer, api: Api,
                                                                    clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 1)  # 20 seconds for 20 leads
    job_id = query_job(api, "SELECT Id FROM Lead")
    clock.advance(5)
    assert _info(api, job_id)["numberRecordsProcessed"] == 5
    emu.control.set_bulk_rate("acme", 5)  # jobs queued from now on only
    clock.advance(1)
    assert _info(api, job_id)["numberRecordsProcessed"] == 6
    emu.control.set_bulk_rate("acme", 2, running=True)
    clock.advance(2)
    assert _info(api, job_id)["numberRecordsProcessed"] == 10
    emu.control.set_bulk_rate("acme", 0, running=True)  # done by the next request
    assert _info(api, job_id)["state"] == "JobComplete"


@pytest.mark.usefixtures("instant_bulk")
def test_results_sets_can_be_capped_below_max_records(emu: EmulatorServer, api: Api) -> None:
    emu.control.set_bulk_results_cap("acme", 8)
    job_id = query_job(api, "SELECT Id FROM Lead")
    sizes, ids, locator = [], [], None
    while locator != "null":
        page = api("GET", f"jobs/query/{job_id}/results",
                   params={"maxRecords": 100_000, **({"locator": locator} if locator else {})})
        sizes.append(int(page.headers["Sforce-NumberOfRecords"]))
        ids += [r["Id"] for r in csv_records(page.text)]
        locator = page.headers["Sforce-Locator"]
    assert sizes == [8, 8, 4]
    assert len(ids) == len(set(ids)) == 20
    assert api("GET", f"jobs/query/{job_id}/results", params={"maxRecords": 5}).headers[
        "Sforce-NumberOfRecords"] == "5"  # a smaller maxRecords still holds
    emu.control.set_bulk_results_cap("acme", None)
    assert api("GET", f"jobs/query/{job_id}/results").headers["Sforce-NumberOfRecords"] == "20"
    with pytest.raises(ValueError, match="records must be >= 1"):
        emu.control.set_bulk_results_cap("acme", 0)
