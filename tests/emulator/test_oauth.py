"""The token endpoint: client_credentials, refresh_token and JWT bearer grants, and their refusals."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from simple_salesforce.api import Salesforce

from emulator import EmulatorServer, OrgInfo
from tests.emulator.conftest import FakeClock, session_for


def _token(emu: EmulatorServer, data: dict[str, str], **kwargs: Any) -> requests.Response:
    return session_for(emu).post(emu.orgs["acme"].token_url, data=data, timeout=30, **kwargs)


def _assertion(org: OrgInfo, exp: float, **overrides: Any) -> str:
    claims = {"iss": org.client_id, "sub": org.username, "aud": "https://login.salesforce.com", "exp": int(exp)}
    claims.update(overrides)
    return jwt.encode(claims, Path(org.private_key_file).read_text(), algorithm="RS256")


def _works(emu: EmulatorServer, body: dict[str, Any]) -> bool:
    sf = Salesforce(instance_url=body["instance_url"], session_id=body["access_token"],
                    session=session_for(emu), version="59.0")
    return bool(sf.query("SELECT Id FROM Account LIMIT 1")["totalSize"] == 1)


def test_client_credentials_in_form_and_basic_auth(emu: EmulatorServer) -> None:
    org = emu.orgs["acme"]
    form = _token(emu, {"grant_type": "client_credentials", "client_id": org.client_id,
                        "client_secret": org.client_secret})
    basic = base64.b64encode(f"{org.client_id}:{org.client_secret}".encode()).decode()
    header = _token(emu, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"})
    for response in (form, header):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["instance_url"] == emu.base_url
        assert body["access_token"].startswith(org.org_id[:15] + "!")
        assert "refresh_token" not in body
        assert _works(emu, body)
    assert emu.control.usage("acme")["used"] == 2  # the two queries; token requests are free


def test_token_requests_are_logged_but_not_counted(emu: EmulatorServer) -> None:
    org = emu.orgs["acme"]
    _token(emu, {"grant_type": "client_credentials", "client_id": org.client_id,
                 "client_secret": org.client_secret})
    (entry,) = emu.control.request_log("acme")
    assert (entry["method"], entry["path"], entry["counted"], entry["status"]) == (
        "POST", "/services/oauth2/token", False, 200)
    assert emu.control.usage("acme")["used"] == 0


def test_token_requests_can_be_counted(clock: FakeClock) -> None:
    with EmulatorServer(orgs=["acme"], records=0, clock=clock, count_token_requests=True) as emu:
        org = emu.orgs["acme"]
        response = _token(emu, {"grant_type": "client_credentials", "client_id": org.client_id,
                                "client_secret": org.client_secret})
        assert response.status_code == 200
        assert emu.control.usage("acme")["used"] == 1
        assert emu.control.request_log("acme")[0]["counted"] is True


def test_refresh_token_grant(emu: EmulatorServer) -> None:
    org = emu.orgs["acme"]
    response = _token(emu, {"grant_type": "refresh_token", "refresh_token": org.refresh_token,
                            "client_id": org.client_id, "client_secret": org.client_secret})
    assert response.status_code == 200
    assert _works(emu, response.json())
    refused = _token(emu, {"grant_type": "refresh_token", "refresh_token": "nope", "client_id": org.client_id})
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}


def test_jwt_bearer_grant_with_each_audience(emu: EmulatorServer, clock: FakeClock) -> None:
    org = emu.orgs["acme-sandbox"]
    assert org.environment == "sandbox"
    for audience in (emu.base_url, "https://login.salesforce.com", "https://test.salesforce.com"):
        assertion = _assertion(org, clock() + 300, aud=audience)
        response = _token(emu, {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                "assertion": assertion})
        assert response.status_code == 200, response.text
        assert _works(emu, response.json())


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"aud": "https://evil.example.com"}, "audience is invalid"),
        ({"exp_offset": -1}, "expired authorization code"),
        ({"sub": "someone@else.example.com"}, "user hasn't approved this consumer"),
        ({"signer": "globex"}, "invalid assertion"),
    ],
)
def test_jwt_bearer_refusals(emu: EmulatorServer, clock: FakeClock, change: dict[str, Any],
                             description: str) -> None:
    org = emu.orgs["acme"]
    signer = emu.orgs[change.pop("signer", "acme")]
    exp = clock() + change.pop("exp_offset", 300)
    assertion = jwt.encode(
        {"iss": org.client_id, "sub": org.username, "aud": emu.base_url, "exp": int(exp), **change},
        Path(signer.private_key_file).read_text(), algorithm="RS256",
    )
    response = _token(emu, {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": description}


def test_jwt_expiry_follows_the_emulator_clock(emu: EmulatorServer, clock: FakeClock) -> None:
    org = emu.orgs["acme"]
    assertion = _assertion(org, clock() + 60)
    data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    assert _token(emu, data).status_code == 200
    clock.advance(60)
    assert _token(emu, data).json()["error_description"] == "expired authorization code"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"grant_type": "client_credentials", "client_id": "unknown", "client_secret": "x"}, 400,
         {"error": "invalid_client_id", "error_description": "client identifier invalid"}),
        ({"grant_type": "client_credentials", "client_id": "ACME", "client_secret": "wrong"}, 400,
         {"error": "invalid_client", "error_description": "invalid client credentials"}),
        ({"grant_type": "password"}, 400,
         {"error": "unsupported_grant_type", "error_description": "grant type not supported"}),
        ({}, 400, {"error": "invalid_request", "error_description": "grant type not specified"}),
    ],
)
def test_token_refusals(emu: EmulatorServer, data: dict[str, str], status: int, error: dict[str, str]) -> None:
    if data.get("client_id") == "ACME":
        data = {**data, "client_id": emu.orgs["acme"].client_id}
    response = _token(emu, data)
    assert response.status_code == status
    assert response.json() == error
