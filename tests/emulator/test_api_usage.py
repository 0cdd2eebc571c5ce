"""Usage past the daily max before the 403 (overdraft), extra Sforce-Limit-Info parts, and /limits with the keys
of a real org: the API request and Bulk API ones live, the others static."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceRefusedRequest

from emulator import AdminClient, EmulatorServer
from emulator.org_limits import STATIC_LIMITS
from tests.emulator.conftest import FakeClock, query_job, salesforce

Api = Callable[..., requests.Response]
SOQL = "SELECT Id FROM Lead LIMIT 1"
LIVE = ("DailyApiRequests", "DailyBulkApiBatches", "DailyBulkV2QueryFileStorageMB", "DailyBulkV2QueryJobs")


def _served(sf: Salesforce) -> bool:
    try:
        sf.query(SOQL)
    except SalesforceRefusedRequest:
        return False
    return True


def test_overdraft_serves_past_the_max_then_blocks_until_usage_falls_below_it(
        sf: Salesforce, emu: EmulatorServer, api: Api, clock: FakeClock) -> None:
    emu.control.set_usage("acme", 998)
    emu.control.set_api_overdraft("acme", 3)
    assert [_served(sf) for _ in range(6)] == [True, True, True, True, True, False]  # 999 .. 1003 served
    assert sf.api_usage["api-usage"].used == 1003  # simple-salesforce reads usage above the max
    refused = api("GET", "limits/")
    assert refused.status_code == 403
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=1005/1000"
    # Blocked: a higher overdraft does not unblock; the usage must drop below the max.
    emu.control.set_api_overdraft("acme", 100)
    assert not _served(sf)
    emu.control.set_usage("acme", 998)
    assert _served(sf)
    clock.advance(3600)
    emu.control.issue_token("acme")
    assert salesforce(emu).restful("limits/")["DailyApiRequests"] == {"Max": 1000, "Remaining": 0}


def test_without_overdraft_the_max_is_the_last_request_served(sf: Salesforce, emu: EmulatorServer) -> None:
    emu.control.set_usage("acme", 999)
    assert [_served(sf) for _ in range(2)] == [True, False]
    with pytest.raises(ValueError, match="overdraft must be >= 0"):
        emu.control.set_api_overdraft("acme", -1)


def test_overdraft_is_a_server_default(clock: FakeClock) -> None:
    with EmulatorServer(orgs=["acme"], records=1, daily_limit=2, clock=clock, api_overdraft=1) as emu:
        sf = salesforce(emu)
        assert [_served(sf) for _ in range(4)] == [True, True, True, False]
    with pytest.raises(ValueError, match="api_overdraft"):
        EmulatorServer(orgs=[], api_overdraft=-1)


def test_per_app_usage_and_extra_parts_in_the_header(sf: Salesforce, emu: EmulatorServer, api: Api) -> None:
    admin = AdminClient(emu.admin_url, emu.admin_token, emu.ca_bundle)
    try:
        admin.set_limit_info("acme", app_name="crmsync", app_max=250, extra_parts=["api-bursts=1/750"])
        sf.query(SOQL)
        sf.query(SOQL)
        header = api("GET", "limits/").headers["Sforce-Limit-Info"]
        assert header == "api-usage=3/1000; api-bursts=1/750; per-app-api-usage=3/250(appName=crmsync)"
        # A client's non-anchored parse finds every part.
        assert re.search(r"api-usage=(\d+)/(\d+)", header).groups() == ("3", "1000")
        usage = sf.api_usage["per-app-api-usage"]
        assert (usage.used, usage.total, usage.name) == (2, 250, "crmsync")
        limits = sf.restful("limits/")["DailyApiRequests"]
        assert limits == {"Max": 1000, "Remaining": 996, "crmsync": {"Max": 250, "Remaining": 246}}
        admin.set_limit_info("acme", app_name="crmsync", app_max=300)  # the same app keeps its count
        assert api("GET", "limits/").headers["Sforce-Limit-Info"] == (
            "api-usage=5/1000; per-app-api-usage=5/300(appName=crmsync)")
        admin.set_limit_info("acme")
        assert api("GET", "limits/").headers["Sforce-Limit-Info"] == "api-usage=6/1000"
        assert emu.control.usage("globex")["used"] == 0
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"extra_parts": ["api-bursts"]}, "must look like name=used/max"),
        ({"extra_parts": ["a=1/2; b=3/4"]}, "must look like name=used/max"),
        ({"app_name": "x"}, "go together"),
        ({"app_name": "bad)name", "app_max": 5}, "app_name must be"),
        ({"app_name": "ok", "app_max": -1}, "app_max >= 0"),
    ],
)
def test_limit_info_refusals(emu: EmulatorServer, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        emu.control.set_limit_info("acme", **kwargs)  # type: ignore[arg-type]


def test_limits_lists_every_key_of_a_real_org(sf: Salesforce, emu: EmulatorServer) -> None:
    limits: dict[str, Any] = sf.restful("limits/") or {}
    assert set(limits) == set(STATIC_LIMITS) | set(LIVE)
    assert len(limits) >= 50
    for name, entry in limits.items():
        assert isinstance(entry["Max"], int), name
        assert 0 <= entry["Remaining"] <= entry["Max"], name
    assert limits["PermissionSets"]["CreateCustom"] == {"Max": 1000, "Remaining": 999}
    assert limits["DailyBulkV2QueryFileStorageMB"]["Max"] == 976562


def test_api_and_bulk_limits_are_live(sf: Salesforce, emu: EmulatorServer, api: Api) -> None:
    before = sf.restful("limits/")
    query_job(api, "SELECT Id FROM Lead")
    after = sf.restful("limits/")
    assert before["DailyApiRequests"]["Remaining"] - after["DailyApiRequests"]["Remaining"] == 2
    assert before["DailyBulkV2QueryJobs"]["Remaining"] - after["DailyBulkV2QueryJobs"]["Remaining"] == 1
    emu.control.set_bulk_limits("acme", batches=7)
    assert sf.restful("limits/")["DailyBulkApiBatches"] == {"Max": 7, "Remaining": 7}
    assert {k: v for k, v in after.items() if k not in LIVE} == STATIC_LIMITS
