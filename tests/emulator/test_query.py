"""query and queryAll: the SOQL subset, paging by nextRecordsUrl, batch sizes and query errors."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from emulator import EmulatorServer
from tests.emulator.conftest import FakeClock, salesforce


@pytest.fixture(scope="module")
def big() -> Iterator[EmulatorServer]:
    """2,100 records per object: more than one default batch."""
    with EmulatorServer(orgs=["acme"], records=2100) as server:
        yield server


def test_query_all_pages_by_2000_and_counts_each_page(big: EmulatorServer) -> None:
    sf = salesforce(big)
    first = sf.query("SELECT Id, Email FROM Lead")
    assert (first["totalSize"], first["done"], len(first["records"])) == (2100, False, 2000)
    assert re.fullmatch(r"/services/data/v59\.0/query/01g[0-9A-Za-z]{15}-2000", first["nextRecordsUrl"])
    before = big.control.usage("acme")["used"]
    everything = sf.query_all("SELECT Id, Email FROM Lead")
    assert everything["totalSize"] == len(everything["records"]) == 2100
    assert len({r["Id"] for r in everything["records"]}) == 2100
    assert big.control.usage("acme")["used"] == before + 2


def test_batch_size_header_reaches_every_page(big: EmulatorServer) -> None:
    sf = salesforce(big)
    big.control.clear_log("acme")
    result = sf.query_all("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=500"})
    assert len(result["records"]) == 2100
    paths = [e["path"] for e in big.control.request_log("acme")]
    assert len(paths) == 5
    assert paths[0] == "/services/data/v59.0/query/"
    assert [p.rsplit("-", 1)[1] for p in paths[1:]] == ["500", "1000", "1500", "2000"]


@pytest.mark.parametrize(("asked", "served"), [("50", 200), ("200", 200), ("5000", 2000)])
def test_batch_size_is_clamped_to_200_to_2000(big: EmulatorServer, asked: str, served: int) -> None:
    page = salesforce(big).query("SELECT Id FROM Case", headers={"Sforce-Query-Options": f"batchSize={asked}"})
    assert len(page["records"]) == served


def test_query_more_with_unknown_locator(big: EmulatorServer) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        salesforce(big).query_more("/services/data/v59.0/query/01gXXXXXXXXXXXXXXX-2000", identifier_is_url=True)
    assert raised.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


@pytest.fixture(scope="module")
def leads() -> Iterator[Salesforce]:
    """Five known leads tagged T-1..T-5 next to the seeded ones (read-only: shared by the module)."""
    with EmulatorServer(orgs=["acme"], records=20, clock=FakeClock()) as server:
        sf = salesforce(server)
        _add_leads(sf)
        yield sf


def _add_leads(sf: Salesforce) -> None:
    rows = [
        ("Ann", "O'Hara", "Initech", 10, True),
        ("Bob", "Smith", "Globex", 20, False),
        ("Cid", "Smith", "Hooli", 30, False),
        ("Dee", "Jones", "Initech", None, False),
        (None, "100%_Real", "Stark", 50, False),
    ]
    for i, (first, last, company, staff, hot) in enumerate(rows, 1):
        body = {"FirstName": first, "LastName": last, "Company": company, "NumberOfEmployees": staff,
                "External_Id__c": f"T-{i}", "Email": f"t{i}@example.com"}
        if hot:
            body["Status"] = "Working - Contacted"
        sf.Lead.create(body)


def _tags(sf: Salesforce, where: str, order: str = "External_Id__c") -> list[str]:
    soql = f"SELECT External_Id__c FROM Lead WHERE External_Id__c LIKE 'T-%' AND ({where}) ORDER BY {order}"
    return [r["External_Id__c"] for r in sf.query_all(soql)["records"]]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("LastName = 'smith'", ["T-2", "T-3"]),  # text equality ignores case
        ("LastName != 'Smith'", ["T-1", "T-4", "T-5"]),
        ("NumberOfEmployees > 20", ["T-3", "T-5"]),
        ("NumberOfEmployees >= 20 AND NumberOfEmployees <= 30", ["T-2", "T-3"]),
        ("NumberOfEmployees < 20", ["T-1"]),
        ("NumberOfEmployees = null", ["T-4"]),
        ("FirstName != null", ["T-1", "T-2", "T-3", "T-4"]),
        ("Company IN ('Initech', 'Hooli')", ["T-1", "T-3", "T-4"]),
        ("Company NOT IN ('Initech')", ["T-2", "T-3", "T-5"]),
        ("LastName = 'O\\'Hara'", ["T-1"]),
        ("LastName LIKE '100\\%\\_%'", ["T-5"]),
        ("LastName LIKE 'S_ith'", ["T-2", "T-3"]),
        ("(Company = 'Globex' OR Company = 'Stark') AND NumberOfEmployees > 25", ["T-5"]),
        ("NOT LastName = 'Smith'", ["T-1", "T-4", "T-5"]),
        ("IsConverted = false AND Status = 'Working - Contacted'", ["T-1"]),
        ("CreatedDate >= 2024-05-07T22:07:19Z", ["T-1", "T-2", "T-3", "T-4", "T-5"]),
        ("CreatedDate > 2024-05-07T22:07:19.000+00:00", []),
    ],
)
def test_where_conditions(leads: Salesforce, where: str, expected: list[str]) -> None:
    assert _tags(leads, where) == expected


def test_order_by_desc_with_nulls_last_and_limit(leads: Salesforce) -> None:
    soql = ("SELECT External_Id__c, NumberOfEmployees FROM Lead WHERE External_Id__c LIKE 'T-%' "
            "ORDER BY NumberOfEmployees DESC LIMIT 4")
    result = leads.query(soql)
    assert [r["NumberOfEmployees"] for r in result["records"]] == [50, 30, 20, 10]
    ascending = _tags(leads, "Id != null", order="NumberOfEmployees ASC")
    assert ascending[0] == "T-4"  # nulls first when ascending


def test_rows_have_attributes_and_selected_fields_only(leads: Salesforce) -> None:
    (row,) = leads.query("SELECT id, email FROM Lead WHERE External_Id__c = 'T-2'")["records"]
    assert list(row) == ["attributes", "Id", "Email"]
    assert row["attributes"] == {"type": "Lead", "url": f"/services/data/v59.0/sobjects/Lead/{row['Id']}"}
    assert row["Email"] == "t2@example.com"


def test_query_all_includes_deleted_records(sf: Salesforce) -> None:
    _add_leads(sf)
    leads = sf
    (row,) = leads.query("SELECT Id FROM Lead WHERE External_Id__c = 'T-3'")["records"]
    assert leads.Lead.delete(row["Id"]) == 204
    assert leads.query("SELECT Id FROM Lead WHERE External_Id__c = 'T-3'")["totalSize"] == 0
    (gone,) = leads.query_all("SELECT Id, IsDeleted FROM Lead WHERE External_Id__c = 'T-3'",
                              include_deleted=True)["records"]
    assert (gone["Id"], gone["IsDeleted"]) == (row["Id"], True)


@pytest.mark.parametrize(
    ("soql", "code", "fragment"),
    [
        ("SELECT Id FORM Lead", "MALFORMED_QUERY", "unexpected token: 'FORM'"),
        ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
        ("SELECT Id FROM Lead WHERE Company = 'a' AND Company = 'b' OR Company = 'c'", "MALFORMED_QUERY",
         "unexpected token: 'OR'"),
        ("SELECT Id FROM Lead LIMIT x", "MALFORMED_QUERY", "unexpected token: 'x'"),
        ("SELECT Id, Nope__c FROM Lead", "INVALID_FIELD", "No such column 'Nope__c' on entity 'Lead'"),
        ("SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01'", "INVALID_FIELD",
         "must be of type datetime and should not be enclosed in quotes"),
        ("SELECT Id FROM Lead WHERE Company = 3", "INVALID_FIELD", "should be enclosed in quotes"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE", "sObject type 'Widget__c' is not supported"),
    ],
)
def test_query_errors(sf: Salesforce, emu: EmulatorServer, soql: str, code: str, fragment: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    assert raised.value.status == 400
    (error,) = raised.value.content
    assert error["errorCode"] == code
    assert fragment in error["message"]
    assert emu.control.usage("acme")["used"] == 1  # failed requests count
