"""sObject calls through simple-salesforce: describe, get, create, update, upsert, delete, updated/deleted."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from emulator import EmulatorServer
from emulator.ids import to_18
from tests.emulator.conftest import START, FakeClock, salesforce

Api = Callable[..., requests.Response]
SF_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
PREFIXES = {"Lead": "00Q", "Contact": "003", "Account": "001", "Opportunity": "006", "Campaign": "701",
            "Case": "500"}


def test_known_salesforce_id_checksum() -> None:
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert to_18("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"
    assert to_18("001A0000006Vm9rAAA") is None


@pytest.mark.parametrize("kind", sorted(PREFIXES))
def test_seeded_records_have_ids_prefixes_and_timestamps(sf: Salesforce, kind: str) -> None:
    records = sf.query_all(f"SELECT Id, SystemModstamp, LastModifiedDate, External_Id__c FROM {kind}")["records"]
    assert len(records) == 20
    for record in records:
        assert len(record["Id"]) == 18
        assert record["Id"].startswith(PREFIXES[kind])
        assert to_18(record["Id"][:15]) == record["Id"]
        assert SF_DATETIME.match(record["SystemModstamp"])
        assert record["LastModifiedDate"] == record["SystemModstamp"]
    assert records[0]["External_Id__c"] == f"{kind.upper()}-000000"


def test_seeding_is_deterministic(clock: FakeClock) -> None:
    soql = "SELECT Name, Email, Company, AnnualRevenue, CreatedDate FROM Lead ORDER BY External_Id__c"
    results = []
    for _ in range(2):
        with EmulatorServer(orgs=["acme"], records=5, clock=clock) as server:
            results.append([dict(r) for r in salesforce(server).query_all(soql)["records"]])
    assert results[0] == results[1]
    assert results[0][0]["CreatedDate"] == "2024-04-08T22:07:19.000+0000"  # 29 days before START


def test_describe_lists_fields_and_external_id(sf: Salesforce) -> None:
    described = sf.Lead.describe()
    assert (described["name"], described["keyPrefix"]) == ("Lead", "00Q")
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["External_Id__c"]["externalId"] is True
    assert fields["External_Id__c"]["idLookup"] is True
    assert fields["SystemModstamp"]["type"] == "datetime"
    assert fields["LastName"]["nillable"] is False
    assert fields["Name"]["createable"] is False
    for kind in PREFIXES:
        assert any(f["externalId"] for f in getattr(sf, kind).describe()["fields"])
    everything = sf.describe()
    assert {o["name"] for o in everything["sobjects"]} == set(PREFIXES)
    assert sf.Case.metadata()["objectDescribe"]["keyPrefix"] == "500"


def test_create_get_update_delete(sf: Salesforce, emu: EmulatorServer, clock: FakeClock) -> None:
    created = sf.Contact.create({"FirstName": "Grace", "LastName": "Hopper", "Email": "grace@navy.example.com"})
    assert created["success"] is True
    assert created["errors"] == []
    contact_id = created["id"]
    assert contact_id.startswith("003")
    record = sf.Contact.get(contact_id)
    assert (record["Name"], record["Email"]) == ("Grace Hopper", "grace@navy.example.com")
    assert record["SystemModstamp"] == "2024-05-07T22:07:19.000+0000"
    assert record["attributes"] == {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{contact_id}"}
    clock.advance(90.5)
    assert sf.Contact.update(contact_id, {"Title": "Rear Admiral"}) == 204
    updated = sf.Contact.get(contact_id[:15])  # 15-character ids work too
    assert updated["Title"] == "Rear Admiral"
    assert updated["SystemModstamp"] == updated["LastModifiedDate"] == "2024-05-07T22:08:49.500+0000"
    assert updated["CreatedDate"] == "2024-05-07T22:07:19.000+0000"
    assert sf.Contact.delete(contact_id) == 204
    with pytest.raises(SalesforceResourceNotFound) as raised:
        sf.Contact.get(contact_id)
    assert raised.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get("003000000000000AAA")


def test_get_with_selected_fields_and_by_external_id(sf: Salesforce) -> None:
    record = sf.Account.get_by_custom_id("External_Id__c", "ACCOUNT-000003")
    assert record["External_Id__c"] == "ACCOUNT-000003"
    assert record["Id"].startswith("001")
    chosen = sf.restful(f"sobjects/Account/{record['Id']}", params={"fields": "Name,Industry"})
    assert chosen is not None
    assert list(chosen) == ["attributes", "Name", "Industry"]


@pytest.mark.parametrize(
    ("body", "code", "fields"),
    [
        ({"FirstName": "Only"}, "REQUIRED_FIELD_MISSING", ["LastName", "Company"]),
        ({"LastName": "X", "Company": "Y", "Bogus__c": 1}, "INVALID_FIELD", ["Bogus__c"]),
        ({"LastName": "X", "Company": "Y", "Name": "Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Name"]),
        ({"LastName": "X", "Company": "Y", "Email": "not-an-email"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
        ({"LastName": "X", "Company": "Y", "External_Id__c": "LEAD-000001"}, "DUPLICATE_VALUE", ["External_Id__c"]),
        ({"LastName": "X" * 81, "Company": "Y"}, "STRING_TOO_LONG", ["LastName"]),
    ],
)
def test_create_refusals(sf: Salesforce, body: dict[str, object], code: str, fields: list[str]) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.create(body)
    (error,) = raised.value.content
    assert (error["errorCode"], error["fields"]) == (code, fields)


def test_type_mismatch_is_a_json_parser_error(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.create({"LastName": "X", "Company": "Y", "NumberOfEmployees": "many"})
    assert raised.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_upsert_by_external_id_creates_then_updates(emu: EmulatorServer, api: Api) -> None:
    sf = salesforce(emu)
    first = api("PATCH", "sobjects/Lead/External_Id__c/NEW-1", json={"LastName": "New", "Company": "Acme"})
    assert first.status_code == 201
    body = first.json()
    assert (body["success"], body["created"], body["errors"]) == (True, True, [])
    second = api("PATCH", "sobjects/Lead/External_Id__c/NEW-1", json={"Title": "CTO"})
    assert second.status_code == 200
    assert second.json() == {"id": body["id"], "success": True, "errors": [], "created": False}
    assert sf.Lead.upsert("External_Id__c/NEW-1", {"City": "Lyon"}) == 200
    record = sf.Lead.get(body["id"])
    assert (record["Title"], record["City"], record["External_Id__c"]) == ("CTO", "Lyon", "NEW-1")
    old = api("PATCH", f"{emu.base_url}/services/data/v45.0/sobjects/Lead/External_Id__c/NEW-1",
              json={"City": "Paris"})
    assert old.status_code == 204  # before API 46.0 an updating upsert had no body
    missing = api("PATCH", "sobjects/Lead/Email/x", json={"City": "Paris"})
    assert missing.status_code == 404


def test_updated_and_deleted_by_date_range(sf: Salesforce, clock: FakeClock) -> None:
    start = datetime.fromtimestamp(START, UTC)
    clock.advance(120)
    lead = sf.Lead.create({"LastName": "Fresh", "Company": "Acme"})["id"]
    seeded = sf.query("SELECT Id FROM Lead ORDER BY External_Id__c DESC LIMIT 1")["records"][0]["Id"]
    clock.advance(120)
    sf.Lead.update(seeded, {"Title": "Touched"})
    sf.Lead.delete(lead)
    clock.advance(120)
    updated = sf.Lead.updated(start, start + timedelta(minutes=10))
    assert updated["ids"] == [seeded]
    assert updated["latestDateCovered"] == "2024-05-07T22:13:00.000+0000"  # the clock, truncated to a minute
    deleted = sf.Lead.deleted(start, start + timedelta(minutes=10))
    assert deleted["deletedRecords"] == [{"id": lead, "deletedDate": "2024-05-07T22:11:19.000+0000"}]
    assert deleted["latestDateCovered"] == "2024-05-07T22:13:00.000+0000"
    assert deleted["earliestDateAvailable"] == "2024-05-07T22:07:00.000+0000"


def test_updated_refuses_a_start_older_than_30_days(sf: Salesforce) -> None:
    start = datetime.fromtimestamp(START, UTC) - timedelta(days=31)
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Account.updated(start, start + timedelta(days=2))
    assert raised.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_unknown_sobject_and_wrong_method(api: Api) -> None:
    assert api("GET", "sobjects/Widget__c/describe/").status_code == 404
    wrong = api("PUT", "sobjects/Lead/describe/")
    assert wrong.status_code == 405
    assert wrong.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"
