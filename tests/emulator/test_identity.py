"""The identity service: the token response's ``id`` URL, ``/services/oauth2/userinfo`` and the ``identity``
entry of the versioned resource list; free calls that refuse a bad token with 403."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from emulator import EmulatorServer
from tests.emulator.conftest import session_for

USER_ID = "005000000000001AAA"


def _token(emu: EmulatorServer, org: str = "acme") -> dict[str, Any]:
    info = emu.orgs[org]
    response = session_for(emu).post(info.token_url, data={
        "grant_type": "client_credentials", "client_id": info.client_id, "client_secret": info.client_secret},
        timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _get(emu: EmulatorServer, url: str, token: str | None, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return session_for(emu).get(url, headers=headers, params=params, timeout=30)


def test_identity_url_of_the_token_answers_who_and_where(emu: EmulatorServer) -> None:
    token = _token(emu)
    org = emu.orgs["acme"]
    assert token["id"] == f"{emu.base_url}/id/{org.org_id}/{USER_ID}"
    response = _get(emu, token["id"], token["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["user_id"], body["organization_id"], body["username"]) == (
        token["id"], USER_ID, org.org_id, org.username)
    assert body["asserted_user"] is True
    assert body["active"] is True
    assert body["urls"]["rest"] == f"{emu.base_url}/services/data/v{{version}}/"
    assert body["urls"]["enterprise"].endswith(f"/services/Soap/c/{{version}}/{org.org_id[:15]}")
    versioned = _get(emu, token["id"], token["access_token"], version="59.0").json()
    assert versioned["urls"]["query"] == f"{emu.base_url}/services/data/v59.0/query/"


def test_identity_takes_the_token_as_a_parameter_too(emu: EmulatorServer) -> None:
    token = _token(emu)
    response = _get(emu, token["id"], None, oauth_token=token["access_token"], format="json")
    assert response.status_code == 200
    assert response.json()["user_id"] == USER_ID


def test_userinfo_answers_openid_claims(emu: EmulatorServer) -> None:
    token = _token(emu)
    org = emu.orgs["acme"]
    for method in ("GET", "POST"):
        response = session_for(emu).request(method, f"{emu.base_url}/services/oauth2/userinfo",
                                            headers={"Authorization": f"Bearer {token['access_token']}"},
                                            timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert (body["sub"], body["user_id"], body["organization_id"], body["preferred_username"]) == (
            token["id"], USER_ID, org.org_id, org.username)
        assert body["email_verified"] is True
        assert body["updated_at"].endswith("Z")


@pytest.mark.parametrize("where", ["identity", "userinfo"])
def test_bad_or_expired_tokens_get_403_bad_oauth_token(emu: EmulatorServer, where: str) -> None:
    token = _token(emu)
    url = token["id"] if where == "identity" else f"{emu.base_url}/services/oauth2/userinfo"
    for bad in (None, "00Dbogus!token"):
        response = _get(emu, url, bad)
        assert (response.status_code, response.text) == (403, "Bad_OAuth_Token")
    emu.control.expire_tokens("acme")
    assert _get(emu, url, token["access_token"]).status_code == 403


def test_another_orgs_identity_url_is_refused(emu: EmulatorServer) -> None:
    acme, globex = _token(emu, "acme"), _token(emu, "globex")
    response = _get(emu, globex["id"], acme["access_token"])
    assert (response.status_code, response.text) == (403, "Bad_Id")


def test_identity_calls_are_free_and_logged(emu: EmulatorServer) -> None:
    token = _token(emu)
    _get(emu, token["id"], token["access_token"])
    _get(emu, f"{emu.base_url}/services/oauth2/userinfo", token["access_token"])
    assert emu.control.usage("acme")["used"] == 0
    logged = [(e["path"], e["status"], e["counted"]) for e in emu.control.request_log("acme")][1:]
    assert logged == [(token["id"].removeprefix(emu.base_url), 200, False),
                      ("/services/oauth2/userinfo", 200, False)]


def test_the_resource_list_names_the_identity_url(emu: EmulatorServer) -> None:
    token = _token(emu)
    resources = _get(emu, f"{emu.base_url}/services/data/v59.0/", token["access_token"]).json()
    assert resources["identity"] == token["id"]
    assert resources["limits"] == "/services/data/v59.0/limits"
