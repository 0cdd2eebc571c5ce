"""The control handle and its admin-path mirror: logs, counts, orgs, usage, limits and faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from emulator import AdminClient, Control, EmulatorServer
from emulator.control import ADMIN_METHODS
from tests.emulator.conftest import error_content, salesforce, session_for

SOQL = "SELECT Id FROM Lead LIMIT 1"


@pytest.fixture(params=["python", "admin-path"])
def handle(request: pytest.FixtureRequest, emu: EmulatorServer) -> Iterator[Control | AdminClient]:
    """The in-process handle, or the same operations over the admin path."""
    if request.param == "python":
        yield emu.control
        return
    client = AdminClient(emu.admin_url, emu.admin_token, emu.ca_bundle)
    yield client
    client.close()


def _outcome(sf: Salesforce) -> Any:
    try:
        sf.query(SOQL)
    except SalesforceGeneralError as error:
        return error.status
    return 200


def test_request_log_and_counts(handle: Control | AdminClient, sf: Salesforce, emu: EmulatorServer) -> None:
    sf.query(SOQL)
    sf.query(SOQL)
    sf.Lead.describe()
    counts = handle.request_counts("acme")
    assert counts == {"GET /services/data/v59.0/query/": 2, "GET /services/data/v59.0/sobjects/Lead/describe": 1}
    log = handle.request_log("acme")
    assert [(e["method"], e["status"], e["counted"], e["api_usage"]) for e in log] == [
        ("GET", 200, True, 1), ("GET", 200, True, 2), ("GET", 200, True, 3)]
    assert log[0]["query"] == "q=SELECT+Id+FROM+Lead+LIMIT+1"
    assert handle.request_log("globex") == []
    handle.clear_log("acme")
    assert handle.request_log("acme") == []
    assert handle.usage("acme") == {"used": 3, "max": 1000}


def test_usage_and_limit(handle: Control | AdminClient, sf: Salesforce) -> None:
    handle.set_usage("acme", 500)
    handle.set_limit("acme", 501)
    assert handle.usage("acme") == {"used": 500, "max": 501}
    sf.query(SOQL)
    with pytest.raises(SalesforceRefusedRequest):
        sf.query(SOQL)
    assert handle.usage("acme") == {"used": 502, "max": 501}


def test_add_and_remove_orgs(handle: Control | AdminClient, emu: EmulatorServer) -> None:
    info = handle.add_org("initech", environment="sandbox", records=3, daily_limit=50)
    assert (info.name, info.environment, info.instance_url) == ("initech", "sandbox", emu.base_url)
    assert info.username.endswith(".sandbox")
    sf = salesforce(emu, "initech")
    assert sf.query("SELECT Id FROM Case")["totalSize"] == 3
    assert sf.api_usage["api-usage"].total == 50
    assert set(handle.orgs()) == {"acme", "globex", "acme-sandbox", "initech"}
    with pytest.raises(ValueError, match="already exists"):
        handle.add_org("initech")
    handle.remove_org("initech")
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Case")
    with pytest.raises(KeyError):
        handle.usage("initech")


def test_expire_and_issue_tokens(handle: Control | AdminClient, emu: EmulatorServer) -> None:
    sf = salesforce(emu)
    handle.expire_tokens("acme")
    with pytest.raises(SalesforceExpiredSession):
        sf.query(SOQL)
    token = handle.issue_token("acme")
    assert handle.orgs()["acme"].access_token == token
    assert salesforce(emu).query(SOQL)["totalSize"] == 1


def test_injected_errors_hit_the_next_counted_requests(handle: Control | AdminClient, sf: Salesforce,
                                                       emu: EmulatorServer) -> None:
    handle.inject_fault("acme", "http503", count=2)
    handle.inject_fault("acme", "http500")
    session_for(emu).get(f"{emu.base_url}/services/data/", timeout=30)  # not counted: no fault consumed
    with pytest.raises(SalesforceGeneralError) as first:
        sf.query(SOQL)
    assert first.value.status == 503
    assert first.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert _outcome(sf) == 503
    with pytest.raises(SalesforceGeneralError) as third:
        sf.query(SOQL)
    assert third.value.status == 500
    assert third.value.content[0]["errorCode"] == "UNKNOWN_EXCEPTION"
    assert _outcome(sf) == 200
    assert [e["fault"] for e in handle.request_log("acme")] == ["http503", "http503", "http500", None]
    assert handle.usage("acme")["used"] == 4  # failed requests count
    assert salesforce(emu, "globex").query(SOQL)["totalSize"] == 1


def test_concurrency_limit_fault(handle: Control | AdminClient, sf: Salesforce) -> None:
    handle.inject_fault("acme", "concurrent_limit")
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.query(SOQL)
    assert error_content(raised.value) == [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                                     "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_dropped_connection(handle: Control | AdminClient, sf: Salesforce) -> None:
    handle.inject_fault("acme", "drop")
    with pytest.raises(requests.ConnectionError):
        sf.query(SOQL)
    (entry,) = handle.request_log("acme")
    assert (entry["fault"], entry["status"], entry["counted"]) == ("drop", None, True)
    assert sf.query(SOQL)["totalSize"] == 1  # the session reconnects


def test_latency_fault_is_applied_and_logged(handle: Control | AdminClient, sf: Salesforce) -> None:
    handle.inject_fault("acme", "latency", latency=0.05)
    assert sf.query(SOQL)["totalSize"] == 1
    assert sf.query(SOQL)["totalSize"] == 1
    assert [(e["fault"], e["latency"]) for e in handle.request_log("acme")] == [("latency", 0.05), (None, 0.0)]


def test_seeded_share_of_errors_is_reproducible(handle: Control | AdminClient, sf: Salesforce) -> None:
    patterns = []
    for _ in range(2):
        handle.set_faults("acme", error_rate=0.3, error_status=500, drop_rate=0.0, seed=42)
        patterns.append([_outcome(sf) for _ in range(30)])
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {200, 500}
    handle.clear_faults("acme")
    assert [_outcome(sf) for _ in range(5)] == [200] * 5


def test_bad_fault_settings_are_refused(handle: Control | AdminClient) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        handle.inject_fault("acme", "meteor")
    with pytest.raises(ValueError, match="rates"):
        handle.set_faults("acme", error_rate=0.8, drop_rate=0.5)
    with pytest.raises(KeyError):
        handle.inject_fault("nobody", "drop")


def test_admin_path_needs_the_admin_token(emu: EmulatorServer) -> None:
    session = session_for(emu)
    org_token = emu.orgs["acme"].access_token
    for headers in ({}, {"Authorization": f"Bearer {org_token}"}):
        response = session.post(f"{emu.admin_url}/usage", json={"org": "acme"}, headers=headers, timeout=30)
        assert response.status_code == 401
    admin = {"Authorization": f"Bearer {emu.admin_token}"}
    assert session.post(f"{emu.admin_url}/usage", json={"org": "acme"}, headers=admin, timeout=30).json() == {
        "result": {"used": 0, "max": 1000}}
    assert session.post(f"{emu.admin_url}/nothing", json={}, headers=admin, timeout=30).status_code == 404
    # The admin token is no org token, and the admin path is not under /services.
    assert emu.admin_url.endswith("/_emulator")
    assert session.get(f"{emu.base_url}/services/data/v59.0/limits/", headers=admin,
                       timeout=30).status_code == 401


def test_admin_client_mirrors_every_admin_method() -> None:
    assert {n for n in vars(AdminClient) if not n.startswith("_")} - {"close"} == ADMIN_METHODS
    assert {n for n in vars(Control) if not n.startswith("_")} >= ADMIN_METHODS


def test_overdraft_and_page_cap(handle: Control | AdminClient, sf: Salesforce) -> None:
    handle.set_usage("acme", 1000)
    handle.set_api_overdraft("acme", 1)
    assert _outcome(sf) == 200
    with pytest.raises(SalesforceRefusedRequest):
        sf.query(SOQL)
    handle.set_usage("acme", 0)
    handle.set_page_cap("acme", 7)
    assert len(sf.query("SELECT Id FROM Lead")["records"]) == 7
    handle.set_page_cap("acme", None)
    assert len(sf.query("SELECT Id FROM Lead")["records"]) == 20
