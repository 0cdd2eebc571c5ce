"""Authentication, the versions list, Sforce-Limit-Info, the rolling daily limit and /limits."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceRefusedRequest

from emulator import EmulatorServer
from tests.emulator.conftest import FakeClock, error_content, salesforce, session_for

Api = Callable[..., requests.Response]
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_versions_list_needs_no_token_and_is_not_counted(emu: EmulatorServer) -> None:
    response = session_for(emu).get(f"{emu.base_url}/services/data/", timeout=30)
    assert response.status_code == 200
    versions = {v["version"]: v for v in response.json()}
    assert versions["59.0"] == {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"}
    assert versions["60.0"]["label"] == "Spring '24"
    assert "Sforce-Limit-Info" not in response.headers
    assert emu.control.usage("acme") == {"used": 0, "max": 1000}


def test_unknown_token_gets_401_list_and_simple_salesforce_raises_expired(emu: EmulatorServer) -> None:
    info = emu.orgs["acme"]
    sf = Salesforce(instance_url=info.instance_url, session_id="00Dbogus!token", session=session_for(emu),
                    version="59.0")
    with pytest.raises(SalesforceExpiredSession) as raised:
        sf.query("SELECT Id FROM Lead")
    assert raised.value.status == 401
    assert error_content(raised.value) == INVALID_SESSION
    assert emu.control.usage("acme")["used"] == 0


def test_token_expires_after_ttl_on_the_emulator_clock(emu: EmulatorServer, clock: FakeClock) -> None:
    sf = salesforce(emu)
    clock.advance(3599)
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1
    clock.advance(1)
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Lead LIMIT 1")


def test_expire_tokens_ends_only_that_orgs_tokens(emu: EmulatorServer) -> None:
    acme, globex = salesforce(emu, "acme"), salesforce(emu, "globex")
    emu.control.expire_tokens("acme")
    with pytest.raises(SalesforceExpiredSession):
        acme.query("SELECT Id FROM Lead LIMIT 1")
    assert globex.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1
    fresh = emu.control.issue_token("acme")
    assert emu.orgs["acme"].access_token == fresh
    assert salesforce(emu, "acme").query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1


def test_each_org_has_its_own_data_and_usage(emu: EmulatorServer) -> None:
    acme, globex = salesforce(emu, "acme"), salesforce(emu, "globex")
    acme_ids = {r["Id"] for r in acme.query_all("SELECT Id FROM Account")["records"]}
    globex_ids = {r["Id"] for r in globex.query_all("SELECT Id FROM Account")["records"]}
    assert len(acme_ids) == len(globex_ids) == 20
    assert not acme_ids & globex_ids
    assert emu.control.usage("acme")["used"] == 1
    assert emu.control.usage("globex")["used"] == 1


def test_every_authenticated_response_carries_usage_even_errors(api: Api) -> None:
    ok = api("GET", "sobjects/Lead/describe/")
    missing = api("GET", "sobjects/Lead/00Q000000000000AAA")
    malformed = api("GET", "query/", params={"q": "SELEC Id FROM Lead"})
    assert [r.status_code for r in (ok, missing, malformed)] == [200, 404, 400]
    assert [r.headers["Sforce-Limit-Info"] for r in (ok, missing, malformed)] == [
        "api-usage=1/1000", "api-usage=2/1000", "api-usage=3/1000",
    ]
    assert missing.json() == [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]


def test_simple_salesforce_reads_api_usage(sf: Salesforce) -> None:
    sf.query("SELECT Id FROM Lead LIMIT 2")
    sf.query("SELECT Id FROM Lead LIMIT 2")
    usage = sf.api_usage["api-usage"]
    assert (usage.used, usage.total) == (2, 1000)


def test_limits_reports_daily_api_requests_including_itself(sf: Salesforce, emu: EmulatorServer) -> None:
    emu.control.set_usage("acme", 41)
    limits = sf.restful("limits/")
    assert limits["DailyApiRequests"] == {"Max": 1000, "Remaining": 958}


def test_past_max_requests_are_refused_and_still_counted(sf: Salesforce, emu: EmulatorServer, api: Api) -> None:
    emu.control.set_usage("acme", 998)
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1  # 999
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1  # 1000 = MAX is still served
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.query("SELECT Id FROM Lead LIMIT 1")
    assert raised.value.status == 403
    assert error_content(raised.value) == LIMIT_EXCEEDED
    refused = api("GET", "limits/")
    assert refused.status_code == 403
    assert "Retry-After" not in refused.headers
    assert re.search(r"api-usage=(\d+)/(\d+)", refused.headers["Sforce-Limit-Info"]).groups() == ("1002", "1000")
    assert emu.control.usage("acme") == {"used": 1002, "max": 1000}
    assert emu.control.usage("globex")["used"] == 0


def test_usage_window_rolls_over_24_hours(sf: Salesforce, emu: EmulatorServer, clock: FakeClock) -> None:
    emu.control.set_limit("acme", 2)
    sf.query("SELECT Id FROM Lead LIMIT 1")
    clock.advance(3600)
    emu.control.issue_token("acme")  # the ready token lives one hour
    sf = salesforce(emu)
    sf.query("SELECT Id FROM Lead LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest):
        sf.query("SELECT Id FROM Lead LIMIT 1")
    clock.advance(23 * 3600)  # the first request leaves the window; the refused one is 23 h old
    assert emu.control.usage("acme")["used"] == 2
    clock.advance(1)
    assert emu.control.usage("acme")["used"] == 2
    emu.control.set_limit("acme", 3)
    emu.control.issue_token("acme")
    sf = salesforce(emu)
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1
    assert sf.api_usage["api-usage"].used == 3


def test_uncounted_endpoints(emu: EmulatorServer) -> None:
    session = session_for(emu)
    info = emu.orgs["acme"]
    session.get(f"{emu.base_url}/services/data/", timeout=30)
    session.post(info.token_url, data={"grant_type": "client_credentials", "client_id": info.client_id,
                                       "client_secret": info.client_secret}, timeout=30)
    session.post(f"{emu.admin_url}/usage", json={"org": "acme"},
                 headers={"Authorization": f"Bearer {emu.admin_token}"}, timeout=30)
    assert emu.control.usage("acme")["used"] == 0


def test_unknown_version_is_404_and_counted(api: Api, emu: EmulatorServer) -> None:
    response = api("GET", f"{emu.base_url}/services/data/v99.0/limits/")
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"
    assert response.headers["Sforce-Limit-Info"] == "api-usage=1/1000"


def test_resources_of_a_version(api: Api) -> None:
    body = api("GET", "").json()
    assert body["query"] == "/services/data/v59.0/query"
    assert body["sobjects"] == "/services/data/v59.0/sobjects"
