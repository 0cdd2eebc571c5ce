"""TokenClient against the emulator over real HTTPS: each grant, refusals, refresh, and secrets kept out of sight."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from structlog.testing import capture_logs

from emulator import EmulatorServer, OrgInfo
from worker.errors import AuthFailed, WorkerError
from worker.salesforce.connections import Connection, ConnectionStore
from worker.salesforce.oauth import JWT_LIFETIME_S, AccessToken, TokenClient


class OffsetClock:
    """Wall-clock time plus an offset a test may move: drives the emulator's view of JWT expiry."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def emu_clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture(scope="module")
def emu(emu_clock: OffsetClock) -> Iterator[EmulatorServer]:
    with EmulatorServer(orgs=["acme", "sandy:sandbox"], records=5, clock=emu_clock) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_clock(emu_clock: OffsetClock) -> Iterator[None]:
    emu_clock.offset = 0.0
    yield
    emu_clock.offset = 0.0


@pytest.fixture
def acme(emu: EmulatorServer) -> OrgInfo:
    return emu.orgs["acme"]


@pytest.fixture
def store(redis_client: redis.Redis) -> ConnectionStore:
    return ConnectionStore(redis_client)


def write(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    return str(path)


def cc_connection(store: ConnectionStore, emu: EmulatorServer, org: OrgInfo, tmp_path: Path, *,
                  secret: str | None = None, tenant: str = "acme") -> Connection:
    return store.connect(tenant, environment=org.environment, login_url=emu.base_url, client_id=org.client_id,
                         client_secret_file=write(tmp_path / f"{tenant}-secret", secret or org.client_secret),
                         ca_bundle=emu.ca_bundle)


def jwt_connection(store: ConnectionStore, emu: EmulatorServer, org: OrgInfo, username: str | None = None,
                   login_url: str | None = None) -> Connection:
    return store.connect("acme", environment=org.environment, login_url=login_url or emu.base_url,
                         client_id=org.client_id, private_key_file=org.private_key_file,
                         username=username or org.username, ca_bundle=emu.ca_bundle)


def rt_connection(store: ConnectionStore, emu: EmulatorServer, org: OrgInfo, tmp_path: Path, *,
                  refresh_token: str | None = None, client_secret: str | None = None) -> Connection:
    secret_file = write(tmp_path / "secret", client_secret) if client_secret else None
    return store.connect("acme", environment=org.environment, login_url=emu.base_url, client_id=org.client_id,
                         refresh_token_file=write(tmp_path / "refresh", refresh_token or org.refresh_token),
                         client_secret_file=secret_file, ca_bundle=emu.ca_bundle)


def assert_token_works(emu: EmulatorServer, org: str, token: AccessToken) -> None:
    """The token authenticates a real API call, and the call lands in ``org``."""
    before = emu.control.request_counts(org).get("GET /services/data/v59.0/limits/", 0)
    response = requests.get(f"{token.instance_url}/services/data/v59.0/limits/", timeout=10, verify=emu.ca_bundle,
                            headers={"Authorization": f"Bearer {token.access_token}"})
    assert response.status_code == 200, response.text
    assert "DailyApiRequests" in response.json()
    assert emu.control.request_counts(org)["GET /services/data/v59.0/limits/"] == before + 1


def assert_token_dead(token: AccessToken, emu: EmulatorServer) -> None:
    response = requests.get(f"{token.instance_url}/services/data/v59.0/limits/", timeout=10, verify=emu.ca_bundle,
                            headers={"Authorization": f"Bearer {token.access_token}"})
    assert response.status_code == 401


def logged_text(logs: Iterable[Mapping[str, Any]]) -> str:
    return "\n".join(repr(entry) for entry in logs)


def test_client_credentials_grant(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore, tmp_path: Path) -> None:
    client = TokenClient(cc_connection(store, emu, acme, tmp_path))
    started = time.time()
    token = client.fetch()
    assert token.instance_url == emu.base_url
    assert started <= token.issued_at <= time.time()
    assert_token_works(emu, "acme", token)
    # Each fetch runs the grant: a new token.
    assert client.fetch().access_token != token.access_token


def test_jwt_bearer_grant(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore) -> None:
    token = TokenClient(jwt_connection(store, emu, acme)).fetch()
    assert_token_works(emu, "acme", token)


def test_jwt_assertion_lives_three_minutes(emu: EmulatorServer, emu_clock: OffsetClock, acme: OrgInfo,
                                           store: ConnectionStore) -> None:
    client = TokenClient(jwt_connection(store, emu, acme))
    # The emulator checks exp against its own clock: just inside the lifetime it is accepted...
    emu_clock.offset = JWT_LIFETIME_S - 20
    assert_token_works(emu, "acme", client.fetch())
    # ...and just past it, refused. Together: exp is now + 3 minutes (give or take 20 s of test run time).
    emu_clock.offset = JWT_LIFETIME_S + 1
    with pytest.raises(AuthFailed, match="expired authorization code") as caught:
        client.fetch()
    assert caught.value.error == "invalid_grant"
    assert JWT_LIFETIME_S == 180


def test_jwt_audience_is_the_login_url(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore) -> None:
    # Same host under another name: the emulator only accepts its own base URL (or Salesforce's) as audience.
    other = emu.base_url.replace("127.0.0.1", "localhost")
    with pytest.raises(AuthFailed, match="audience is invalid"):
        TokenClient(jwt_connection(store, emu, acme, login_url=other)).fetch()


def test_jwt_wrong_subject_is_refused(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore) -> None:
    with pytest.raises(AuthFailed, match="user hasn't approved this consumer") as caught:
        TokenClient(jwt_connection(store, emu, acme, username="someone@else.example")).fetch()
    assert caught.value.status == 400
    assert caught.value.tenant == "acme"


def test_refresh_token_grant(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore, tmp_path: Path) -> None:
    token = TokenClient(rt_connection(store, emu, acme, tmp_path)).fetch()
    assert_token_works(emu, "acme", token)
    with_secret = TokenClient(rt_connection(store, emu, acme, tmp_path, client_secret=acme.client_secret)).fetch()
    assert_token_works(emu, "acme", with_secret)


def test_sandbox_org_grant(emu: EmulatorServer, store: ConnectionStore, tmp_path: Path) -> None:
    sandy = emu.orgs["sandy"]
    assert sandy.environment == "sandbox"
    conn = cc_connection(store, emu, sandy, tmp_path, tenant="sandy")
    assert conn.environment == "sandbox"
    assert_token_works(emu, "sandy", TokenClient(conn).fetch())


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
def test_refused_credentials_raise_auth_failed_without_the_secret(emu: EmulatorServer, acme: OrgInfo,
                                                                  store: ConnectionStore, tmp_path: Path,
                                                                  grant: str) -> None:
    wrong = "wrong-secret-0123456789abcdef"
    if grant == "client_credentials":
        conn = cc_connection(store, emu, acme, tmp_path, secret=wrong)
        expected = ("invalid_client", 400, "invalid client credentials")  # as Salesforce answers
    else:
        conn = rt_connection(store, emu, acme, tmp_path, refresh_token=wrong)
        expected = ("invalid_grant", 400, "expired access/refresh token")
    with capture_logs() as logs, pytest.raises(AuthFailed) as caught:
        TokenClient(conn).fetch()
    error = caught.value
    assert isinstance(error, WorkerError)
    assert (error.error, error.status) == expected[:2]
    assert expected[2] in str(error)
    assert wrong not in str(error)
    assert wrong not in repr(error.args)
    assert logs, "the refusal is logged"
    assert any(entry.get("error") == expected[0] for entry in logs)
    assert wrong not in logged_text(logs)


def test_refresh_after_401(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore, tmp_path: Path) -> None:
    for conn in (cc_connection(store, emu, acme, tmp_path), rt_connection(store, emu, acme, tmp_path),
                 jwt_connection(store, emu, acme)):
        client = TokenClient(conn)
        old = client.fetch()
        emu.control.expire_tokens("acme")
        assert_token_dead(old, emu)
        new = client.refresh()
        assert new.access_token != old.access_token
        assert_token_works(emu, "acme", new)


def test_issued_refresh_token_is_used_then_grant_is_rerun(emu: EmulatorServer, acme: OrgInfo,
                                                          store: ConnectionStore, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator's client-credentials answer has no refresh_token; feed one in as a server could, and check that
    # refresh() uses it, and that a refused one falls back to the connection's own grant.
    client = TokenClient(cc_connection(store, emu, acme, tmp_path))
    sent: list[dict[str, str]] = []
    real_post = client._session.post

    def spy(url: str, **kwargs: Any) -> requests.Response:
        sent.append(dict(kwargs["data"]))
        return real_post(url, **kwargs)

    monkeypatch.setattr(client._session, "post", spy)
    client._issued_refresh_token = acme.refresh_token
    assert_token_works(emu, "acme", client.refresh())
    assert [form["grant_type"] for form in sent] == ["refresh_token"]

    client._issued_refresh_token = "revoked-token"
    sent.clear()
    assert_token_works(emu, "acme", client.refresh())
    assert [form["grant_type"] for form in sent] == ["refresh_token", "client_credentials"]
    assert client._issued_refresh_token is None


def test_secret_gone_at_token_time(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore,
                                   tmp_path: Path) -> None:
    conn = cc_connection(store, emu, acme, tmp_path)
    Path(tmp_path / "acme-secret").unlink()
    with pytest.raises(AuthFailed, match=r"client secret unavailable: secret file .* does not exist") as caught:
        TokenClient(conn).fetch()
    assert caught.value.error == "secret_unreadable"
    assert caught.value.status is None


def test_env_secret_read_at_token_time(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_ACME", acme.client_secret)
    conn = store.connect("acme", environment="production", login_url=emu.base_url, client_id=acme.client_id,
                         client_secret_env="CRMSYNC_SECRET_ACME", ca_bundle=emu.ca_bundle)
    assert_token_works(emu, "acme", TokenClient(conn).fetch())
    monkeypatch.setenv("CRMSYNC_SECRET_ACME", "")
    with pytest.raises(AuthFailed, match="CRMSYNC_SECRET_ACME is not set or empty"):
        TokenClient(conn).fetch()


def test_https_is_verified(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore, tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", acme.client_secret)
    conn = store.connect("acme", environment="production", login_url=emu.base_url, client_id=acme.client_id,
                         client_secret_file=secret)  # no CA bundle: the emulator's CA is not trusted
    with pytest.raises(AuthFailed, match=r"cannot reach the token endpoint.*SSLError") as caught:
        TokenClient(conn).fetch()
    assert caught.value.error == "network"
    assert caught.value.__cause__ is None
    assert acme.client_secret not in str(caught.value)


def test_unreachable_endpoint(acme: OrgInfo, store: ConnectionStore, tmp_path: Path, emu: EmulatorServer) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = write(tmp_path / "secret", acme.client_secret)
    conn = store.connect("acme", environment="production", login_url=f"https://127.0.0.1:{port}",
                         client_id=acme.client_id, client_secret_file=secret, ca_bundle=emu.ca_bundle)
    with capture_logs() as logs, pytest.raises(AuthFailed, match="ConnectionError") as caught:
        TokenClient(conn, timeout=5).fetch()
    assert caught.value.error == "network"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
    assert acme.client_secret not in str(caught.value)
    assert acme.client_secret not in logged_text(logs)


def test_no_secret_or_token_in_logs_or_reprs(emu: EmulatorServer, acme: OrgInfo, store: ConnectionStore,
                                             tmp_path: Path) -> None:
    key_text = Path(acme.private_key_file).read_text().splitlines()[1]
    tokens: list[AccessToken] = []
    with capture_logs() as logs:
        for conn in (cc_connection(store, emu, acme, tmp_path), rt_connection(store, emu, acme, tmp_path),
                     jwt_connection(store, emu, acme)):
            client = TokenClient(conn)
            tokens += [client.fetch(), client.refresh()]
    assert len(logs) >= 6
    assert all(entry["event"] == "token_issued" for entry in logs)
    text = logged_text(logs)
    for token in tokens:
        assert token.access_token not in text
        assert token.access_token not in repr(token)
        assert token.access_token not in str(token)
        assert token.instance_url in repr(token)
    for secret in (acme.client_secret, acme.refresh_token, key_text):
        assert secret not in text
