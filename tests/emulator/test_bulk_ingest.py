"""Bulk API 2.0 ingest jobs: simple-salesforce's bulk2 upsert, uploads, processing on the clock, results."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from simple_salesforce.api import Salesforce

from emulator import EmulatorServer
from emulator.sftime import format_epoch
from tests.emulator.conftest import START, FakeClock, bulk2, csv_records, ingest_job

Api = Callable[..., requests.Response]
LEADS = "LastName,Company,Email\nZuse,\"Bletchley, Park\",konrad@example.com\nNoether,Navy,\n,NoName,\n"


def _job(api: Api, job_id: str) -> dict[str, object]:
    body: dict[str, object] = api("GET", f"jobs/ingest/{job_id}").json()
    return body


def _lead(sf: Salesforce, external_id: str) -> dict[str, object]:
    record: dict[str, object] = sf.Lead.get_by_custom_id("External_Id__c", external_id)
    return record


@pytest.mark.usefixtures("instant_bulk")
def test_simple_salesforce_bulk2_upsert_by_external_id(sf: Salesforce, clock: FakeClock) -> None:
    clock.advance(60)
    before = _lead(sf, "LEAD-000003")
    results = bulk2(sf).Lead.upsert(records=[
        {"External_Id__c": "LEAD-000003", "Title": "CTO"},
        {"External_Id__c": "NEW-000001", "LastName": "Lovelace", "Company": "Analytical Engines"},
    ], external_id_field="External_Id__c", wait=0)
    assert [{k: v for k, v in r.items() if k != "job_id"} for r in results] == [
        {"numberRecordsFailed": 0, "numberRecordsProcessed": 2, "numberRecordsTotal": 2}]
    outcome = bulk2(sf).Lead.get_all_ingest_records(str(results[0]["job_id"]))
    created = {r["External_Id__c"]: r["sf__Created"] for r in outcome["successfulRecords"]}
    assert created == {"LEAD-000003": "false", "NEW-000001": "true"}
    assert outcome["failedRecords"] == outcome["unprocessedRecords"] == []
    after = _lead(sf, "LEAD-000003")
    # The empty LastName and Company of the update row leave those fields alone.
    assert (after["Title"], after["LastName"], after["Company"]) == ("CTO", before["LastName"], before["Company"])
    assert after["SystemModstamp"] == format_epoch(START + 60) != before["SystemModstamp"]
    assert _lead(sf, "NEW-000001")["Name"] == "Lovelace"


def test_ingest_job_lifecycle_and_results(emu: EmulatorServer, sf: Salesforce, api: Api, clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 2)
    created = api("POST", "jobs/ingest", json={"object": "Lead", "operation": "insert", "lineEnding": "LF"})
    job = created.json()
    assert (created.status_code, job) == (200, {
        "id": job["id"], "operation": "insert", "object": "Lead", "createdById": "005000000000001AAA",
        "createdDate": format_epoch(START), "systemModstamp": format_epoch(START), "state": "Open",
        "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": 59.0,
        "contentUrl": f"services/data/v59.0/jobs/ingest/{job['id']}/batches", "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    })
    uploaded = api("PUT", f"jobs/ingest/{job['id']}/batches", data=LEADS, headers={"Content-Type": "text/csv"})
    assert (uploaded.status_code, uploaded.content) == (201, b"")
    assert _job(api, job["id"])["numberRecordsProcessed"] == 0
    closed = api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"}).json()
    assert closed["state"] == "UploadComplete"
    assert "contentUrl" not in closed
    assert _job(api, job["id"])["state"] == "UploadComplete"
    assert api("GET", f"jobs/ingest/{job['id']}/successfulResults").status_code == 400
    clock.advance(1)
    running = _job(api, job["id"])
    assert (running["state"], running["numberRecordsProcessed"]) == ("InProgress", 2)
    assert sf.query("SELECT Id FROM Lead WHERE Company = 'Navy'")["totalSize"] == 1  # processed rows are in
    clock.advance(1)
    done = _job(api, job["id"])
    assert done == {
        **closed, "systemModstamp": format_epoch(START + 1.5), "state": "JobComplete", "jobType": "V2Ingest",
        "numberRecordsProcessed": 3, "numberRecordsFailed": 1, "retries": 0, "totalProcessingTime": 1500,
        "apiActiveProcessingTime": 1500, "apexProcessingTime": 0,
    }
    zuse = sf.query("SELECT Id FROM Lead WHERE LastName = 'Zuse'")["records"][0]["Id"]
    noether = sf.query("SELECT Id FROM Lead WHERE LastName = 'Noether'")["records"][0]["Id"]
    assert api("GET", f"jobs/ingest/{job['id']}/successfulResults").text == (
        '"sf__Id","sf__Created","LastName","Company","Email"\n'
        f'"{zuse}","true","Zuse","Bletchley, Park","konrad@example.com"\n'
        f'"{noether}","true","Noether","Navy",""\n')
    assert api("GET", f"jobs/ingest/{job['id']}/failedResults").text == (
        '"sf__Id","sf__Error","LastName","Company","Email"\n'
        '"","REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --","","NoName",""\n')
    assert api("GET", f"jobs/ingest/{job['id']}/unprocessedrecords").text == '"LastName","Company","Email"\n'


@pytest.mark.usefixtures("instant_bulk")
def test_update_csv_quotes_empty_values_and_null(sf: Salesforce, api: Api, clock: FakeClock) -> None:
    lead = sf.Lead.create({"LastName": "Quote", "Company": "Q", "Title": "Old", "Phone": "123", "City": "Oslo"})["id"]
    clock.advance(5)
    title = 'New, "quoted"\nsecond line'
    data = f'Id;Title;Phone;City\r\n{lead};"New, ""quoted""\nsecond line";;#N/A\r\n'
    job_id = ingest_job(api, "Lead", "update", data, columnDelimiter="SEMICOLON", lineEnding="CRLF")
    assert _job(api, job_id)["numberRecordsFailed"] == 0
    record = sf.Lead.get(lead)
    assert (record["Title"], record["Phone"], record["City"]) == (title, "123", None)
    assert record["SystemModstamp"] == format_epoch(START + 5)
    assert api("GET", f"jobs/ingest/{job_id}/successfulResults").text == (
        f'"sf__Id";"sf__Created";"Id";"Title";"Phone";"City"\r\n"{lead}";"false";"{lead}";'
        '"New, ""quoted""\nsecond line";"";"#N/A"\r\n')


@pytest.mark.usefixtures("instant_bulk")
def test_rows_that_fail_are_reported_with_their_error(sf: Salesforce, api: Api) -> None:
    data = ("External_Id__c,LastName,Company,AnnualRevenue\n"
            "LEAD-000001,Renamed,,\n"
            "DUP-1,Twin,A,\n"
            "DUP-1,Twin,B,\n"
            "NEW-2,Rich,C,lots\n"
            "NEW-3,Extra,D,1,overflow\n"
            'NEW-4,Str"ay,E,\n'
            ",Nobody,F,\n")
    job_id = ingest_job(api, "Lead", "upsert", data, externalIdFieldName="External_Id__c")
    assert (_job(api, job_id)["numberRecordsProcessed"], _job(api, job_id)["numberRecordsFailed"]) == (7, 6)
    errors = {r["External_Id__c"] + "/" + r["LastName"]: r["sf__Error"] for r in csv_records(
        api("GET", f"jobs/ingest/{job_id}/failedResults").text)}
    parse = "InvalidBatch : Failed to parse CSV."
    assert errors == {
        "DUP-1/Twin": "DUPLICATE_VALUE:Duplicate external id specified: DUP-1:External_Id__c --",
        "NEW-2/Rich": "INVALID_TYPE_ON_FIELD_IN_RECORD:AnnualRevenue: value not of required type: lots:"
                      "AnnualRevenue --",
        "NEW-3/Extra": f"{parse} Wrong number of columns: the header has 4, this row has 5",
        'NEW-4/Str"ay': f"{parse} Found unescaped quote. A value with quote should be within a quote",
        "/Nobody": "MISSING_ARGUMENT:External_Id__c not specified:External_Id__c --",
    }
    assert _lead(sf, "LEAD-000001")["LastName"] == "Renamed"
    failed = api("GET", f"jobs/ingest/{job_id}/failedResults").text
    assert failed.count("DUPLICATE_VALUE") == 2


@pytest.mark.usefixtures("instant_bulk")
def test_update_and_delete_by_id_and_upsert_by_id(sf: Salesforce, api: Api) -> None:
    ids = [r["Id"] for r in sf.query("SELECT Id FROM Contact ORDER BY Id LIMIT 2")["records"]]
    deleted = ingest_job(api, "Contact", "delete", f"Id\n{ids[0]}\n003000000000000\nbogus\n")
    errors = [r["sf__Error"] for r in csv_records(api("GET", f"jobs/ingest/{deleted}/failedResults").text)]
    assert errors == ["INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--",
                      "MALFORMED_ID:Contact ID: id value of incorrect type: bogus:Id --"]
    soql = f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{ids[0]}'"
    assert sf.query(soql)["totalSize"] == 0
    assert sf.query_all(soql, include_deleted=True)["records"][0]["IsDeleted"] is True  # in the recycle bin
    upserted = ingest_job(api, "Contact", "upsert", f"Id,LastName\n{ids[1]},Kept\n,Added\n",
                          externalIdFieldName="Id")
    created = [r["sf__Created"] for r in csv_records(api("GET", f"jobs/ingest/{upserted}/successfulResults").text)]
    assert created == ["false", "true"]
    assert sf.Contact.get(ids[1])["LastName"] == "Kept"
    missing = ingest_job(api, "Contact", "update", "Id,LastName\n,Nobody\n")
    assert csv_records(api("GET", f"jobs/ingest/{missing}/failedResults").text)[0]["sf__Error"] == (
        "MISSING_ARGUMENT:Id not specified in an update call:Id --")


@pytest.mark.usefixtures("instant_bulk")
def test_unreadable_data_fails_the_whole_job(sf: Salesforce, api: Api) -> None:
    unknown = ingest_job(api, "Lead", "insert", "LastName,Company,Bogus__c\nA,B,C\nD,E,F\n")
    info = _job(api, unknown)
    assert (info["state"], info["errorMessage"], info["numberRecordsProcessed"]) == (
        "Failed", "InvalidBatch : Field name not found : Bogus__c", 0)
    assert csv_records(api("GET", f"jobs/ingest/{unknown}/unprocessedrecords").text) == [
        {"LastName": "A", "Company": "B", "Bogus__c": "C"}, {"LastName": "D", "Company": "E", "Bogus__c": "F"}]
    crlf = ingest_job(api, "Lead", "insert", "LastName,Company\r\nA,B\r\n")
    assert _job(api, crlf)["errorMessage"] == (
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF")
    assert sf.query("SELECT Id FROM Lead WHERE Company = 'B'")["totalSize"] == 0


def test_state_changes_the_job_state_forbids(emu: EmulatorServer, api: Api, clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 1)
    open_job = api("POST", "jobs/ingest", json={"object": "Lead", "operation": "insert"}).json()["id"]
    wrong_type = api("PUT", f"jobs/ingest/{open_job}/batches", data="LastName\nX\n",
                     headers={"Content-Type": "application/json"})
    assert wrong_type.status_code == 415
    refused = api("DELETE", f"jobs/ingest/{open_job}")
    assert refused.json()[0]["errorCode"] == "API_ERROR"
    api("PUT", f"jobs/ingest/{open_job}/batches", data=LEADS, headers={"Content-Type": "text/csv"})
    aborted = api("PATCH", f"jobs/ingest/{open_job}", json={"state": "Aborted"})
    assert (aborted.status_code, aborted.json()["state"]) == (200, "Aborted")
    assert len(csv_records(api("GET", f"jobs/ingest/{open_job}/unprocessedrecords").text)) == 3
    assert api("PATCH", f"jobs/ingest/{open_job}", json={"state": "UploadComplete"}).json() == [{
        "errorCode": "INVALIDJOBSTATE", "message": "Closing already Aborted Job not allowed"}]

    job_id = ingest_job(api, "Lead", "insert", LEADS)
    late = api("PUT", f"jobs/ingest/{job_id}/batches", data=LEADS, headers={"Content-Type": "text/csv"})
    assert (late.status_code, late.json()[0]["errorCode"]) == (400, "INVALIDJOBSTATE")
    clock.advance(1.5)
    assert api("DELETE", f"jobs/ingest/{job_id}").status_code == 400  # InProgress
    clock.advance(10)
    assert api("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"}).json() == [{
        "errorCode": "INVALIDJOBSTATE", "message": "Closing already Completed Job not allowed"}]
    assert api("PATCH", f"jobs/ingest/{job_id}", json={"state": "Aborted"}).json() == [{
        "errorCode": "INVALIDJOBSTATE", "message": "Aborting already Completed Job not allowed"}]
    assert api("DELETE", f"jobs/ingest/{job_id}").status_code == 204
    assert api("GET", f"jobs/ingest/{job_id}").status_code == 404
    assert api("GET", f"jobs/query/{open_job}").status_code == 404  # an ingest job is no query job


def test_aborting_a_running_job_keeps_what_was_processed(emu: EmulatorServer, sf: Salesforce, api: Api,
                                                         clock: FakeClock) -> None:
    emu.control.set_bulk_rate("acme", 1)
    job_id = ingest_job(api, "Lead", "insert", LEADS)
    clock.advance(1)
    api("PATCH", f"jobs/ingest/{job_id}", json={"state": "Aborted"})
    clock.advance(60)
    assert (_job(api, job_id)["state"], _job(api, job_id)["numberRecordsProcessed"]) == ("Aborted", 1)
    assert [r["LastName"] for r in csv_records(api("GET", f"jobs/ingest/{job_id}/unprocessedrecords").text)] == [
        "Noether", ""]
    assert sf.query("SELECT Id FROM Lead WHERE Company = 'Navy'")["totalSize"] == 0


@pytest.mark.usefixtures("instant_bulk")
def test_several_uploads_make_one_job(api: Api) -> None:
    job_id = api("POST", "jobs/ingest", json={"object": "Account", "operation": "insert"}).json()["id"]
    for data in ("Name,Industry\nFirst,Energy\n", "Name,BillingCity\nSecond,Lyon\n"):
        api("PUT", f"jobs/ingest/{job_id}/batches", data=data, headers={"Content-Type": "text/csv"})
    api("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
    rows = csv_records(api("GET", f"jobs/ingest/{job_id}/successfulResults").text)
    assert [(r["Name"], r["Industry"], r["BillingCity"]) for r in rows] == [("First", "Energy", ""),
                                                                           ("Second", "", "Lyon")]
    listed = api("GET", "jobs/ingest", params={"jobType": "V2Ingest"}).json()["records"]
    assert [(r["id"], r["jobType"], r["state"]) for r in listed] == [(job_id, "V2Ingest", "JobComplete")]


def test_bad_ingest_jobs_are_refused_when_created(api: Api) -> None:
    cases = [
        ({"object": "Gadget__c", "operation": "insert"}, "API_ERROR"),
        ({"operation": "insert"}, "API_ERROR"),
        ({"object": "Lead", "operation": "merge"}, "JSON_PARSER_ERROR"),
        ({"object": "Lead", "operation": "upsert"}, "API_ERROR"),
        ({"object": "Lead", "operation": "upsert", "externalIdFieldName": "Email"}, "API_ERROR"),
        ({"object": "Lead", "operation": "insert", "externalIdFieldName": "External_Id__c"}, "API_ERROR"),
        ({"object": "Lead", "operation": "hardDelete"}, "FEATURENOTENABLED"),
    ]
    for body, code in cases:
        response = api("POST", "jobs/ingest", json=body)
        assert (response.status_code, response.json()[0]["errorCode"]) == (400, code), body
    assert api("GET", "jobs/ingest").json()["records"] == []
