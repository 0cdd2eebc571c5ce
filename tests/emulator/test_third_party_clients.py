"""Clients written by others, unchanged, against the emulator: aiosalesforce (Python, httpx) and jsforce
(JavaScript, undici, which streams every request body, token refreshes included, as chunked).

Neither is a project dependency yet: the aiosalesforce tests run when it is installed in the virtualenv, the
jsforce ones when ``npm install`` has been run in ``tests/emulator/clients`` (jsforce 3.10.26 with undici held
at 7.16.0, the last undici that runs on Node.js 20).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import EmulatorServer
from tests.emulator.conftest import FakeClock, salesforce

CLIENTS = Path(__file__).with_name("clients")
LONG_TEXT = "SELECT Id, Notes__c, Profile__c FROM Lead"


@pytest.fixture
def big(clock: FakeClock) -> Any:
    """450 records per object, one cursor per user: long text queries take three pages."""
    with EmulatorServer(orgs=["acme"], records=450, clock=clock, cursor_limit=1) as server:
        yield server


class _ToEmulator(httpx.AsyncBaseTransport):
    """Sends every request to the emulator: aiosalesforce accepts only *.my.salesforce.com base URLs."""

    def __init__(self, emu: EmulatorServer) -> None:
        self._target = httpx.URL(emu.base_url)
        self._inner = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=emu.ca_bundle))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host=self._target.host, port=self._target.port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _aiosalesforce_session(emu: EmulatorServer) -> dict[str, Any]:
    aiosf = pytest.importorskip("aiosalesforce", reason="aiosalesforce is not installed")
    org = emu.orgs["acme"]
    usage: list[tuple[str, int | None]] = []

    def observe(event: Any) -> None:
        if event.type == "response":
            usage.append((event.response.url.path, event.consumed))

    async def session() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=_ToEmulator(emu)) as http:
            sf = aiosf.Salesforce(http, base_url="https://acme.my.salesforce.com", version="59.0",
                                  auth=aiosf.ClientCredentialsFlow(org.client_id, org.client_secret),
                                  event_hooks=[observe])
            long_text = [r async for r in sf.query(LONG_TEXT)]
            emu.control.expire_tokens("acme")  # the next call gets a 401 and the client fetches a new token
            counted = [r async for r in sf.query("SELECT COUNT() FROM Lead")]
            made = await sf.sobject.upsert("Lead", "AIO-1", "External_Id__c", {"LastName": "Aio", "Company": "C"})
            got = await sf.sobject.get("Lead", "AIO-1", external_id_field="External_Id__c", fields=["Id", "Company"])
            limits = await sf.get_limits()
            emu.control.set_limit_info("acme", extra_parts=["api-bursts=1/750"])
            await sf.get_limits()
            return {"long_text": long_text, "counted": counted, "made": made, "got": got, "limits": limits}

    return {**asyncio.run(session()), "usage": usage}


def test_aiosalesforce_pages_refreshes_and_upserts(big: EmulatorServer) -> None:
    out = _aiosalesforce_session(big)
    assert len({r["Id"] for r in out["long_text"]}) == 450
    pages = [e["path"] for e in big.control.request_log("acme") if "/query" in e["path"]]
    assert len(pages) == 3 + 1  # 200 + 200 + 50, then the COUNT()
    assert out["counted"] == []
    assert out["made"].created is True
    assert out["got"]["Id"] == out["made"].id
    assert out["limits"]["DailyApiRequests"]["Max"] == 100_000
    assert len(out["limits"]) > 50
    tokens = [e for e in big.control.request_log("acme") if e["path"] == "/services/oauth2/token"]
    assert len(tokens) == 2
    # aiosalesforce reads usage with an anchored pattern: a header with more parts leaves it blind (None).
    read = [consumed for path, consumed in out["usage"] if path.startswith("/services/data/")]
    assert read[:3] == [1, 2, 3]
    assert read[-2] == big.control.usage("acme")["used"] - 1
    assert read[-1] is None


def _jsforce_session(emu: EmulatorServer) -> dict[str, Any]:
    if shutil.which("node") is None or not (CLIENTS / "node_modules" / "jsforce").is_dir():
        pytest.skip("jsforce is not installed: run `npm install` in tests/emulator/clients")
    org = emu.orgs["acme"]
    emu.control.expire_tokens("acme")
    config = {"instanceUrl": emu.base_url, "staleToken": org.access_token, "refreshToken": org.refresh_token,
              "clientId": org.client_id, "clientSecret": org.client_secret}
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": emu.ca_bundle, "NODE_PATH": str(CLIENTS / "node_modules")}
    done = subprocess.run(["node", str(CLIENTS / "jsforce_session.cjs"), json.dumps(config)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_jsforce_session(big: EmulatorServer) -> None:
    (gone,) = salesforce(big).query("SELECT Id FROM Lead WHERE External_Id__c = 'LEAD-000007'")["records"]
    salesforce(big).Lead.delete(gone["Id"])
    out = _jsforce_session(big)
    assert out["refreshed"] is True  # a refresh-token grant posted as a chunked stream
    assert out["longText"] == {"totalSize": 449, "fetched": 449, "ids": 449}
    assert out["queryAll"] == {"fetched": 450, "deleted": 1}
    assert out["count"] == {"totalSize": 449, "records": 0}
    assert out["releasedCursor"]["error"] == "INVALID_QUERY_LOCATOR"
    org = big.orgs["acme"]
    assert out["identity"] == {"userId": "005000000000001AAA", "organizationId": org.org_id,
                               "username": org.username}
    assert out["limits"]["keys"] > 50
    assert out["limits"]["api"]["Max"] == 100_000
    assert out["retrieve"][1] is None
    assert all(out["retrieve"][i] for i in (0, 2))
    assert out["upsert"] == ["DUPLICATE_VALUE", "ok", "DUPLICATE_VALUE"]
    assert out["limitInfo"]["apiUsage"]["used"] == big.control.usage("acme")["used"]
    paths = [e["path"] for e in big.control.request_log("acme")]
    assert any("/queryAll" in p for p in paths)
    assert "/services/data/v59.0/composite/sobjects/Account" in paths
