"""Query pages of "up to" the batch size: the long text rule, batchSize per request, the page cap, queryAll's
next pages and SELECT COUNT()."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from emulator import EmulatorServer
from tests.emulator.conftest import salesforce

Api = Callable[..., requests.Response]
NEXT = re.compile(r"^/services/data/v59\.0/query/01g[0-9A-Za-z]{15}-(\d+)$")


@pytest.fixture(scope="module")
def big() -> Iterator[EmulatorServer]:
    """900 records per object (read-only: shared by the module)."""
    with EmulatorServer(orgs=["acme"], records=900) as server:
        yield server


def _page_sizes(emu: EmulatorServer, soql: str, **headers: str) -> list[int]:
    sf = salesforce(emu)
    page = sf.query(soql, headers=headers)
    sizes = [len(page["records"])]
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True, headers=headers)
        sizes.append(len(page["records"]))
    return sizes


def test_two_custom_long_text_areas_cap_pages_at_200(big: EmulatorServer) -> None:
    assert _page_sizes(big, "SELECT Id, Notes__c, Profile__c FROM Lead") == [200] * 4 + [100]
    # One long text area, or the standard Description (not a custom field), keep the default 2,000.
    assert _page_sizes(big, "SELECT Id, Notes__c FROM Lead") == [900]
    assert _page_sizes(big, "SELECT Id, Description FROM Case") == [900]
    # The rule wins over a bigger batch size asked for.
    assert _page_sizes(big, "SELECT Notes__c, Profile__c FROM Lead",
                       **{"Sforce-Query-Options": "batchSize=1000"}) == [200] * 4 + [100]


def test_describe_tells_long_and_rich_text_areas(sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    notes, profile = fields["Notes__c"], fields["Profile__c"]
    assert (notes["type"], notes["length"], notes["extraTypeInfo"], notes["htmlFormatted"]) == (
        "textarea", 32768, "plaintextarea", False)
    assert (profile["type"], profile["extraTypeInfo"], profile["htmlFormatted"]) == (
        "textarea", "richtextarea", True)
    assert fields["Email"]["extraTypeInfo"] is None


def test_batch_size_is_read_from_each_request(big: EmulatorServer) -> None:
    session = requests.Session()
    session.verify = big.ca_bundle
    session.headers["Authorization"] = f"Bearer {big.orgs['acme'].access_token}"
    base = f"{big.base_url}/services/data/v59.0"
    first = session.get(f"{base}/query/", params={"q": "SELECT Id FROM Account"},
                        headers={"Sforce-Query-Options": "batchSize=300"}, timeout=30).json()
    second = session.get(big.base_url + first["nextRecordsUrl"],
                         headers={"Sforce-Query-Options": "batchSize=500"}, timeout=30).json()
    third = session.get(big.base_url + second["nextRecordsUrl"], timeout=30).json()
    assert [len(p["records"]) for p in (first, second, third)] == [300, 500, 100]
    assert [NEXT.match(p["nextRecordsUrl"]).group(1) for p in (first, second)] == ["300", "800"]
    assert third["done"] is True
    assert "nextRecordsUrl" not in third
    ids = [r["Id"] for p in (first, second, third) for r in p["records"]]
    assert len(set(ids)) == 900


def test_page_cap_shortens_every_page(big: EmulatorServer) -> None:
    big.control.set_page_cap("acme", 250)
    try:
        assert _page_sizes(big, "SELECT Id FROM Contact") == [250, 250, 250, 150]
        assert _page_sizes(big, "SELECT Id FROM Contact", **{"Sforce-Query-Options": "batchSize=200"}) == [
            200] * 4 + [100]
    finally:
        big.control.set_page_cap("acme", None)
    assert _page_sizes(big, "SELECT Id FROM Contact") == [900]
    with pytest.raises(ValueError, match="records must be >= 1"):
        big.control.set_page_cap("acme", 0)


def test_query_all_next_pages_are_named_under_query_and_answer_on_both(sf: Salesforce, emu: EmulatorServer,
                                                                      api: Api) -> None:
    emu.control.set_page_cap("acme", 5)
    (gone,) = sf.query("SELECT Id FROM Lead WHERE External_Id__c = 'LEAD-000003'")["records"]
    sf.Lead.delete(gone["Id"])
    first = api("GET", "queryAll/", params={"q": "SELECT Id, IsDeleted FROM Lead"}).json()
    assert (first["totalSize"], len(first["records"])) == (20, 5)
    assert NEXT.match(first["nextRecordsUrl"])
    via_query = api("GET", emu.base_url + first["nextRecordsUrl"]).json()
    via_query_all = api("GET", emu.base_url + first["nextRecordsUrl"].replace("/query/", "/queryAll/")).json()
    assert via_query == via_query_all
    # simple-salesforce follows the URL as given and sees the deleted record.
    everything = sf.query_all("SELECT Id, IsDeleted FROM Lead", include_deleted=True)["records"]
    assert [r["Id"] for r in everything if r["IsDeleted"]] == [gone["Id"]]


@pytest.mark.parametrize(
    ("soql", "total"),
    [
        ("SELECT COUNT() FROM Lead", 20),
        ("SELECT count() FROM Lead WHERE External_Id__c LIKE 'LEAD-00000%'", 10),
        ("SELECT COUNT() FROM Lead WHERE External_Id__c = 'nobody'", 0),
        ("SELECT COUNT() FROM Lead LIMIT 7", 7),
    ],
)
def test_select_count_answers_total_size_without_records(sf: Salesforce, emu: EmulatorServer, soql: str,
                                                         total: int) -> None:
    assert sf.query(soql) == {"totalSize": total, "done": True, "records": []}
    assert emu.control.query_cursors("acme") == 0


def test_select_count_counts_deleted_records_only_in_query_all(sf: Salesforce) -> None:
    (row,) = sf.query("SELECT Id FROM Lead WHERE External_Id__c = 'LEAD-000001'")["records"]
    sf.Lead.delete(row["Id"])
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 19
    assert sf.query("SELECT COUNT() FROM Lead", include_deleted=True)["totalSize"] == 20


@pytest.mark.parametrize(
    ("soql", "fragment"),
    [
        ("SELECT COUNT() FROM Lead ORDER BY Name", "ORDER BY can't be used with COUNT()"),
        ("SELECT COUNT(), Id FROM Lead", "unexpected token: ','"),
        ("SELECT COUNT(Id) FROM Lead", "unexpected token: 'Id'"),
    ],
)
def test_select_count_refusals(sf: Salesforce, soql: str, fragment: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    (error,) = raised.value.content
    assert error["errorCode"] == "MALFORMED_QUERY"
    assert fragment in error["message"]


def test_bulk_query_jobs_refuse_count(api: Api) -> None:
    response = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT COUNT() FROM Lead"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "API_ERROR"
