"""sObject Collections: an external id twice in one upsert (DUPLICATE_VALUE), and retrieve by ids with GET and
POST (up to 2,000 ids, ``fields`` in the body)."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from emulator import EmulatorServer

UPSERT = "composite/sobjects/Lead/External_Id__c"
ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"


def _lead(ext: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Lead"}, "External_Id__c": ext, "LastName": "Dup", "Company": "C", **fields}


def _upsert(sf: Salesforce, records: list[dict[str, Any]], all_or_none: bool) -> Any:
    return sf.restful(UPSERT, method="PATCH", json={"allOrNone": all_or_none, "records": records})


def _titles(sf: Salesforce, *exts: str) -> dict[str, str | None]:
    listed = ", ".join(f"'{e}'" for e in exts)
    rows = sf.query(f"SELECT External_Id__c, Title FROM Lead WHERE External_Id__c IN ({listed})")["records"]
    return {r["External_Id__c"]: r["Title"] for r in rows}


def test_duplicates_fail_each_and_the_rest_is_upserted(sf: Salesforce, emu: EmulatorServer) -> None:
    records = [_lead("D-1", Title="first"), _lead("LEAD-000001", Title="kept"), _lead("D-1", Title="second"),
               _lead("D-2", Title="new")]
    results = _upsert(sf, records, all_or_none=False)
    duplicate = {"id": None, "success": False, "created": False, "errors": [
        {"statusCode": "DUPLICATE_VALUE", "message": "Duplicate external id specified: D-1",
         "fields": ["External_Id__c"]}]}
    assert results[0] == results[2] == duplicate
    assert [(r["success"], r["created"]) for r in (results[1], results[3])] == [(True, False), (True, True)]
    assert _titles(sf, "D-1", "LEAD-000001", "D-2") == {"LEAD-000001": "kept", "D-2": "new"}
    assert emu.control.usage("acme")["used"] == 2


def test_duplicates_with_all_or_none_roll_everything_back(sf: Salesforce) -> None:
    records = [_lead("LEAD-000002", Title="rolled"), _lead("D-3"), _lead("D-3")]
    results = _upsert(sf, records, all_or_none=True)
    assert [r["errors"][0]["statusCode"] for r in results] == [ROLLED_BACK, "DUPLICATE_VALUE", "DUPLICATE_VALUE"]
    assert not any(r["success"] or r["created"] for r in results)
    assert _titles(sf, "LEAD-000002", "D-3") == {"LEAD-000002": None}


def test_numbers_and_strings_of_the_same_value_are_the_same_external_id(sf: Salesforce) -> None:
    results = _upsert(sf, [_lead("7"), {**_lead("x"), "External_Id__c": 7}], all_or_none=False)
    assert [r["errors"][0]["statusCode"] for r in results] == ["DUPLICATE_VALUE"] * 2


def test_retrieve_by_post_with_fields_in_the_body(sf: Salesforce, emu: EmulatorServer) -> None:
    rows = sf.query("SELECT Id, Name FROM Account LIMIT 3")["records"]
    ids = [r["Id"] for r in rows]
    body = {"ids": [ids[0], "001000000000000AAA", ids[2][:15], "not-an-id"], "fields": ["id", "name"]}
    got = sf.restful("composite/sobjects/Account", method="POST", json=body)
    assert got[1] is None
    assert got[3] is None
    assert [(g["Id"], g["Name"]) for g in (got[0], got[2])] == [(ids[0], rows[0]["Name"]), (ids[2], rows[2]["Name"])]
    assert got[0]["attributes"] == {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{ids[0]}"}
    assert emu.control.usage("acme")["used"] == 2


def test_retrieve_takes_up_to_2000_ids(sf: Salesforce) -> None:
    ids = [r["Id"] for r in sf.query("SELECT Id FROM Contact")["records"]]
    many = (ids * 100)[:2000]
    got = sf.restful("composite/sobjects/Contact", method="POST", json={"ids": many, "fields": ["Id"]})
    assert [g["Id"] for g in got] == many
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful("composite/sobjects/Contact", method="POST", json={"ids": [*many, ids[0]], "fields": ["Id"]})
    assert raised.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"ids": ["001000000000000AAA"], "fields": ["Id", "Nope__c"]}, "INVALID_FIELD"),
        ({"ids": ["001000000000000AAA"]}, "MISSING_ARGUMENT"),
        ({"fields": ["Id"]}, "MISSING_ARGUMENT"),
        ({"ids": "001000000000000AAA", "fields": ["Id"]}, "JSON_PARSER_ERROR"),
    ],
)
def test_retrieve_refusals(sf: Salesforce, body: dict[str, Any], code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful("composite/sobjects/Account", method="POST", json=body)
    assert raised.value.content[0]["errorCode"] == code


def test_retrieve_by_get_names_fields_as_described(sf: Salesforce) -> None:
    (row,) = sf.query("SELECT Id, Name FROM Account LIMIT 1")["records"]
    (got,) = sf.restful("composite/sobjects/Account", params={"ids": row["Id"], "fields": "ID,name"})
    assert (got["Id"], got["Name"]) == (row["Id"], row["Name"])
