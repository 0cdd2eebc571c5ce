"""sObject Collections and Composite through simple-salesforce's ``restful``: results, allOrNone, caps."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from emulator import EmulatorServer

ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "message": "Record rolled back because not all records were valid and the request was using "
                          "AllOrNone header", "fields": []}


def _leads(*names: str) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Lead"}, "LastName": n, "Company": "Acme"} for n in names]


def _post(sf: Salesforce, path: str, body: dict[str, Any], method: str = "POST") -> Any:
    return sf.restful(path, method=method, json=body)


def _count(sf: Salesforce, where: str) -> int:
    return int(sf.query(f"SELECT Id FROM Lead WHERE {where}")["totalSize"])


def test_collection_create_update_delete_each_count_one(sf: Salesforce, emu: EmulatorServer) -> None:
    created = _post(sf, "composite/sobjects", {"allOrNone": False, "records": _leads("A1", "A2", "A3")})
    assert [r["success"] for r in created] == [True, True, True]
    assert all(r["id"].startswith("00Q") and r["errors"] == [] for r in created)
    ids = [r["id"] for r in created]
    updates = [{"attributes": {"type": "Lead"}, "Id": i, "Title": "VP"} for i in ids]
    assert [r["success"] for r in _post(sf, "composite/sobjects", {"records": updates}, "PATCH")] == [True] * 3
    assert _count(sf, "Title = 'VP'") == 3
    deleted = sf.restful("composite/sobjects", params={"ids": ",".join(ids), "allOrNone": "false"},
                         method="DELETE")
    assert deleted == [{"id": i, "success": True, "errors": []} for i in ids]
    assert _count(sf, "Title = 'VP'") == 0
    assert emu.control.usage("acme")["used"] == 5  # three collection calls and two queries


def test_collection_errors_use_status_code(sf: Salesforce) -> None:
    records = [*_leads("Good"), {"attributes": {"type": "Lead"}, "LastName": "NoCompany"}]
    results = _post(sf, "composite/sobjects", {"allOrNone": False, "records": records})
    assert results[0]["success"] is True
    assert results[1] == {"id": None, "success": False, "errors": [
        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]",
         "fields": ["Company"]}]}
    assert _count(sf, "LastName = 'Good'") == 1


def test_collection_all_or_none_rolls_everything_back(sf: Salesforce) -> None:
    records = [*_leads("Keep1", "Keep2"), {"attributes": {"type": "Lead"}, "LastName": "Bad", "Company": "X",
                                            "Email": "nope"}]
    results = _post(sf, "composite/sobjects", {"allOrNone": True, "records": records})
    assert [r["success"] for r in results] == [False, False, False]
    assert results[0]["errors"] == [ROLLED_BACK]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert _count(sf, "LastName LIKE 'Keep%'") == 0


def test_collection_upsert_reports_created(sf: Salesforce) -> None:
    records = [{"attributes": {"type": "Lead"}, "External_Id__c": "LEAD-000001", "Title": "Boss"},
               {"attributes": {"type": "Lead"}, "External_Id__c": "U-NEW", "LastName": "N", "Company": "C"}]
    results = _post(sf, "composite/sobjects/Lead/External_Id__c", {"allOrNone": False, "records": records},
                     "PATCH")
    assert [(r["success"], r["created"]) for r in results] == [(True, False), (True, True)]
    assert sf.Lead.get_by_custom_id("External_Id__c", "LEAD-000001")["Title"] == "Boss"


def test_collection_retrieve_by_ids(sf: Salesforce) -> None:
    rows = sf.query("SELECT Id, Name FROM Account LIMIT 2")["records"]
    ids = ",".join(r["Id"] for r in rows)
    got = sf.restful("composite/sobjects/Account", params={"ids": ids, "fields": "Id,Name"})
    assert [(g["Id"], g["Name"]) for g in got] == [(r["Id"], r["Name"]) for r in rows]


def test_collection_is_capped_at_200_records(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        _post(sf, "composite/sobjects", {"records": _leads(*[f"L{i}" for i in range(201)])})
    assert raised.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert len(_post(sf, "composite/sobjects", {"records": _leads(*[f"L{i}" for i in range(200)])})) == 200


def test_composite_with_references_counts_one(sf: Salesforce, emu: EmulatorServer) -> None:
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "acct",
         "body": {"Name": "Composite Co"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "person",
         "body": {"LastName": "Ref", "AccountId": "@{acct.id}"}},
        {"method": "GET", "url": "/services/data/v59.0/sobjects/Contact/@{person.id}?fields=AccountId",
         "referenceId": "check"},
        {"method": "GET", "url": "/services/data/v59.0/query/?q=SELECT+Id+FROM+Account+WHERE+Name='Composite Co'",
         "referenceId": "found"},
    ]}
    answers = _post(sf, "composite", body)["compositeResponse"]
    assert [a["httpStatusCode"] for a in answers] == [201, 201, 200, 200]
    assert [a["referenceId"] for a in answers] == ["acct", "person", "check", "found"]
    account_id = answers[0]["body"]["id"]
    assert answers[2]["body"]["AccountId"] == account_id
    assert answers[3]["body"]["records"][0]["Id"] == account_id
    assert emu.control.usage("acme")["used"] == 1


def test_composite_all_or_none_halts_and_rolls_back(sf: Salesforce) -> None:
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Lead", "referenceId": "ok",
         "body": {"LastName": "Halted", "Company": "X"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Lead", "referenceId": "bad",
         "body": {"LastName": "Halted"}},
        {"method": "GET", "url": "/services/data/v59.0/limits", "referenceId": "after"},
    ]}
    answers = _post(sf, "composite", body)["compositeResponse"]
    assert [a["httpStatusCode"] for a in answers] == [400, 400, 400]
    assert answers[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert answers[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert answers[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert _count(sf, "LastName = 'Halted'") == 0


def test_composite_without_all_or_none_keeps_going(sf: Salesforce) -> None:
    body = {"compositeRequest": [
        {"method": "GET", "url": "/services/data/v59.0/sobjects/Lead/00Q000000000000AAA", "referenceId": "gone"},
        {"method": "GET", "url": "/services/data/v59.0/sobjects/Lead/@{gone.Id}", "referenceId": "follow"},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Lead", "referenceId": "made",
         "body": {"LastName": "Kept", "Company": "X"}},
    ]}
    answers = _post(sf, "composite", body)["compositeResponse"]
    assert [a["httpStatusCode"] for a in answers] == [404, 400, 201]
    assert answers[1]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert _count(sf, "LastName = 'Kept'") == 1


def test_composite_is_capped_at_25_subrequests(sf: Salesforce) -> None:
    request = {"method": "GET", "url": "/services/data/v59.0/limits", "referenceId": "r"}
    too_many = [{**request, "referenceId": f"r{i}"} for i in range(26)]
    with pytest.raises(SalesforceMalformedRequest):
        _post(sf, "composite", {"compositeRequest": too_many})
    answers = _post(sf, "composite", {"compositeRequest": too_many[:25]})["compositeResponse"]
    assert len(answers) == 25
    assert {a["httpStatusCode"] for a in answers} == {200}
