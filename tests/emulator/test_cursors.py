"""Query cursors: Salesforce's 2-day lifetime on the emulator's clock, and the per-user limit and idle expiry
tests and benchmarks can turn on; an expired or released locator answers INVALID_QUERY_LOCATOR."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from emulator import AdminClient, EmulatorServer
from tests.emulator.conftest import FakeClock, error_content, salesforce

SOQL = "SELECT Id FROM Lead"
BATCH = {"Sforce-Query-Options": "batchSize=200"}
INVALID_LOCATOR = [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
TWO_DAYS = 2 * 24 * 3600


def _open(sf: Salesforce) -> str:
    """Run a query whose result needs a second page and return its next page URL."""
    page = sf.query(SOQL, headers=BATCH)
    assert page["done"] is False
    return str(page["nextRecordsUrl"])


def _more(sf: Salesforce, url: str) -> dict[str, Any]:
    page: dict[str, Any] = sf.query_more(url, identifier_is_url=True, headers=BATCH)
    return page


def _refused(sf: Salesforce, url: str) -> list[dict[str, str]]:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query_more(url, identifier_is_url=True)
    assert raised.value.status == 400
    content: list[dict[str, str]] = error_content(raised.value)
    return content


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _emulator(clock: FakeClock, **options: object) -> EmulatorServer:
    return EmulatorServer(orgs=["acme"], records=450, clock=clock, token_ttl=10 * 24 * 3600,
                          **options)  # type: ignore[arg-type]


def test_cursors_live_two_days_after_their_query_whatever_their_use(clock: FakeClock) -> None:
    with _emulator(clock) as emu:
        sf = salesforce(emu)
        url = _open(sf)
        clock.advance(TWO_DAYS - 1)
        page = _more(sf, url)  # use does not extend the lifetime
        assert len(page["records"]) == 200
        clock.advance(1)
        assert _refused(sf, url) == INVALID_LOCATOR
        assert _refused(sf, page["nextRecordsUrl"]) == INVALID_LOCATOR
        # Refused pages count like any call; the query itself has left the rolling 24 hours.
        assert emu.control.usage("acme")["used"] == 3


def test_no_limit_on_open_cursors_by_default(clock: FakeClock) -> None:
    with _emulator(clock) as emu:
        sf = salesforce(emu)
        urls = [_open(sf) for _ in range(30)]
        assert emu.control.query_cursors("acme") == 30
        assert all(len(_more(sf, u)["records"]) == 200 for u in urls)


def test_idle_cursors_expire_when_configured(clock: FakeClock) -> None:
    with _emulator(clock, cursor_idle_timeout=900) as emu:
        sf = salesforce(emu)
        url = _open(sf)
        clock.advance(899)
        second = _more(sf, url)  # a use restarts the idle time
        clock.advance(899)
        third = _more(sf, second["nextRecordsUrl"])
        assert third["done"] is True
        clock.advance(900)
        assert emu.control.query_cursors("acme") == 0
        assert _refused(sf, second["nextRecordsUrl"]) == INVALID_LOCATOR


def test_past_the_per_user_limit_the_oldest_cursor_is_released(clock: FakeClock) -> None:
    with _emulator(clock, cursor_limit=10) as emu:
        sf = salesforce(emu)
        urls = [_open(sf) for _ in range(11)]
        assert emu.control.query_cursors("acme") == 10
        assert _refused(sf, urls[0]) == INVALID_LOCATOR
        assert all(len(_more(sf, u)["records"]) == 200 for u in urls[1:])


def test_cursor_policy_per_org_through_the_admin_path(emu: EmulatorServer, clock: FakeClock) -> None:
    admin = AdminClient(emu.admin_url, emu.admin_token, emu.ca_bundle)
    try:
        emu.control.set_page_cap("acme", 5)
        emu.control.set_page_cap("globex", 5)
        admin.set_query_cursors("acme", limit=1, idle_timeout=60)
        acme, globex = salesforce(emu, "acme"), salesforce(emu, "globex")
        first, second = acme.query(SOQL)["nextRecordsUrl"], acme.query(SOQL)["nextRecordsUrl"]
        kept = [globex.query(SOQL)["nextRecordsUrl"] for _ in range(3)]
        assert (admin.query_cursors("acme"), admin.query_cursors("globex")) == (1, 3)
        assert _refused(acme, first) == INVALID_LOCATOR
        clock.advance(60)
        assert _refused(acme, second) == INVALID_LOCATOR
        assert all(globex.query_more(u, identifier_is_url=True)["records"] for u in kept)
        with pytest.raises(ValueError, match="cursor limit must be >= 1"):
            admin.set_query_cursors("acme", limit=0)
    finally:
        admin.close()


@pytest.mark.parametrize("locator", ["01gXXXXXXXXXXXXXXX-200", "nonsense", "01gXXXXXXXXXXXXXXX-x"])
def test_unknown_or_malformed_locators(sf: Salesforce, emu: EmulatorServer, locator: str) -> None:
    assert _refused(sf, f"/services/data/v59.0/query/{locator}") == INVALID_LOCATOR


def test_an_offset_past_the_results_is_refused(sf: Salesforce, emu: EmulatorServer) -> None:
    emu.control.set_page_cap("acme", 5)
    url = sf.query(SOQL)["nextRecordsUrl"]
    assert _refused(sf, url.rsplit("-", 1)[0] + "-21") == INVALID_LOCATOR
    assert sf.query_more(url.rsplit("-", 1)[0] + "-20", identifier_is_url=True)["records"] == []


@pytest.mark.parametrize(("options", "message"), [({"cursor_limit": 0}, "cursor limit"),
                                                  ({"cursor_idle_timeout": 0}, "idle timeout"),
                                                  ({"cursor_lifetime": -1}, "lifetime")])
def test_bad_policies_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmulatorServer(orgs=[], **options)  # type: ignore[arg-type]
