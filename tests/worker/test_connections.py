"""ConnectionStore on a real Redis: the grants it derives, the sandbox -> production rule, and secret handling."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from quota.connection import connect
from quota.errors import InvalidInput, InvalidTenant
from quota.replies import text
from worker import keys
from worker.errors import ConnectionRefused, NotConnected, WorkerError
from worker.salesforce.connections import Connection, ConnectionStore

SECRET = "s3cr3t-client-secret-value-0123456789"
REFRESH = "5Aep-refresh-token-value-9876543210"
LOGIN = "https://login.salesforce.com"


@pytest.fixture
def store(redis_client: redis.Redis) -> ConnectionStore:
    return ConnectionStore(redis_client)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "client-secret"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture(scope="module")
def key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def key_file(tmp_path: Path, key_pem: str) -> Path:
    path = tmp_path / "jwt-key.pem"
    path.write_text(key_pem)
    return path


@pytest.fixture
def refresh_file(tmp_path: Path) -> Path:
    path = tmp_path / "refresh-token"
    path.write_text(REFRESH)
    return path


def snapshot(client: redis.Redis) -> dict[str, object]:
    return {k: client.dump(k) for k in client.keys("*")}


def redis_text(client: redis.Redis) -> str:
    """Every key, and every value of every key, as one string."""
    parts: list[Any] = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        kind = client.type(key)
        if kind == "hash":
            for field, value in client.hgetall(key).items():
                parts += [field, value]
        elif kind == "set":
            parts += list(cast(set[Any], client.smembers(key)))
        elif kind == "string":
            parts.append(client.get(key))
        elif kind == "list":
            parts += cast(list[Any], client.lrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected key type {kind} for {key}")
    return "\n".join(str(p) for p in parts)


def connect_cc(store: ConnectionStore, tenant: str, secret_file: Path, environment: str = "production",
               login_url: str = LOGIN) -> Connection:
    return store.connect(tenant, environment=environment, login_url=login_url, client_id="cid-1",
                         client_secret_file=str(secret_file))


def test_client_credentials_connection_round_trips(store: ConnectionStore, secret_file: Path) -> None:
    before = datetime.now(UTC)
    conn = connect_cc(store, "acme", secret_file, login_url=LOGIN + "/")
    after = datetime.now(UTC)
    assert conn.grant == "client_credentials"
    assert conn.client_secret_ref == f"file:{secret_file}"
    assert conn.private_key_ref is None
    assert conn.refresh_token_ref is None
    assert conn.login_url == LOGIN  # trailing slash dropped: the token URL must not get "//"
    assert conn.environment == "production"
    assert conn.ever_production is True
    assert before <= conn.connected_at <= after
    assert conn.connected_at.tzinfo is not None
    assert conn.connected_at.utcoffset() is not None
    assert conn.connected_at.utcoffset().total_seconds() == 0
    assert store.get("acme") == conn
    assert store.all() == [conn]


def test_jwt_and_refresh_token_grants(store: ConnectionStore, key_file: Path, refresh_file: Path,
                                      secret_file: Path) -> None:
    jwt_conn = store.connect("jwt-t", environment="sandbox", login_url=LOGIN, client_id="cid",
                             private_key_file=str(key_file), username="me@example.com")
    assert jwt_conn.grant == "jwt_bearer"
    assert jwt_conn.private_key_ref == f"file:{key_file}"
    assert jwt_conn.username == "me@example.com"
    assert jwt_conn.client_secret_ref is None
    assert jwt_conn.ever_production is False

    rt = store.connect("rt-t", environment="production", login_url=LOGIN, client_id="cid",
                       refresh_token_file=str(refresh_file))
    assert rt.grant == "refresh_token"
    assert rt.refresh_token_ref == f"file:{refresh_file}"
    assert rt.client_secret_ref is None

    rt2 = store.connect("rt-s", environment="production", login_url=LOGIN, client_id="cid",
                        refresh_token_file=str(refresh_file), client_secret_file=str(secret_file))
    assert rt2.grant == "refresh_token"
    assert rt2.client_secret_ref == f"file:{secret_file}"

    assert [c.tenant for c in store.all()] == ["jwt-t", "rt-s", "rt-t"]
    assert store.get("jwt-t") == jwt_conn
    assert store.get("rt-s") == rt2


def test_relative_secret_path_is_stored_absolute(store: ConnectionStore, secret_file: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(secret_file.parent)
    conn = store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                         client_secret_file=secret_file.name, ca_bundle=secret_file.name)
    assert conn.client_secret_ref == f"file:{secret_file}"
    assert conn.ca_bundle == str(secret_file)


def test_client_secret_from_environment(store: ConnectionStore, redis_client: redis.Redis,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_ACME", SECRET)
    conn = store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                         client_secret_env="CRMSYNC_SECRET_ACME")
    assert conn.client_secret_ref == "env:CRMSYNC_SECRET_ACME"
    assert SECRET not in redis_text(redis_client)

    monkeypatch.delenv("CRMSYNC_SECRET_ACME")
    with pytest.raises(ConnectionRefused, match="CRMSYNC_SECRET_ACME is not set"):
        store.connect("other", environment="production", login_url=LOGIN, client_id="cid",
                      client_secret_env="CRMSYNC_SECRET_ACME")
    assert store.all() == [conn]


def test_sandbox_then_production_is_allowed(store: ConnectionStore, secret_file: Path) -> None:
    sandbox = connect_cc(store, "acme", secret_file, environment="sandbox", login_url="https://test.salesforce.com")
    assert sandbox.ever_production is False
    production = connect_cc(store, "acme", secret_file, environment="production")
    assert production.environment == "production"
    assert production.ever_production is True
    assert store.get("acme") == production


def test_production_then_sandbox_is_refused_and_nothing_written(store: ConnectionStore, secret_file: Path,
                                                                redis_client: redis.Redis) -> None:
    connect_cc(store, "acme", secret_file, environment="sandbox")
    production = connect_cc(store, "acme", secret_file, environment="production")
    before = snapshot(redis_client)
    with pytest.raises(ConnectionRefused, match="connected to a production org and cannot be connected to a sandbox"):
        connect_cc(store, "acme", secret_file, environment="sandbox", login_url="https://test.salesforce.com")
    assert snapshot(redis_client) == before
    assert store.get("acme") == production


def test_a_production_connect_racing_a_sandbox_connect_wins(store: ConnectionStore, redis_url: str,
                                                             secret_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    connect_cc(store, "acme", secret_file, environment="sandbox")
    other = cast(redis.Redis, connect(redis_url, decode_responses=True))  # or the cluster, under tests/cluster
    raced: list[bool] = []

    def production_connect_in_between(value: object) -> str | None:
        # Runs right after the sandbox connect has read the flag and before it writes: another process connects
        # the tenant to production in that gap. The sandbox write must then be retried and refused.
        if not raced:
            raced.append(True)
            connect_cc(ConnectionStore(other), "acme", secret_file, environment="production")
        return text(value)

    monkeypatch.setattr("worker.salesforce.connections.text", production_connect_in_between)
    try:
        with pytest.raises(ConnectionRefused):
            connect_cc(store, "acme", secret_file, environment="sandbox", login_url="https://test.salesforce.com")
    finally:
        other.close()
    assert raced == [True]
    final = store.get("acme")
    assert (final.environment, final.ever_production, final.login_url) == ("production", True, LOGIN)


def test_ever_production_survives_reconnects(store: ConnectionStore, secret_file: Path, key_file: Path) -> None:
    connect_cc(store, "acme", secret_file, environment="production")
    # Reconnect to production with another grant and URL: still flagged, and a sandbox is still refused.
    again = store.connect("acme", environment="production", login_url="https://acme.my.salesforce.com",
                          client_id="cid-2", private_key_file=str(key_file), username="u@example.com")
    assert again.ever_production is True
    assert store.get("acme").ever_production is True
    with pytest.raises(ConnectionRefused):
        connect_cc(store, "acme", secret_file, environment="sandbox")
    # Another tenant is not affected.
    assert connect_cc(store, "globex", secret_file, environment="sandbox").environment == "sandbox"


def test_reconnect_replaces_the_connection(store: ConnectionStore, secret_file: Path, key_file: Path,
                                           redis_client: redis.Redis) -> None:
    first = store.connect("acme", environment="sandbox", login_url=LOGIN, client_id="cid-1",
                          private_key_file=str(key_file), username="u@example.com", ca_bundle=str(secret_file))
    second = connect_cc(store, "acme", secret_file, environment="production", login_url="https://other.my.salesforce.com")
    assert second.connection_id != first.connection_id
    got = store.get("acme")
    assert got == second
    # Fields of the old grant are gone, not merged.
    assert got.private_key_ref is None
    assert got.username is None
    assert got.ca_bundle is None
    assert got.login_url == "https://other.my.salesforce.com"
    assert "private_key_ref" not in redis_client.hgetall(keys.connection("acme"))
    assert store.all() == [second]
    assert redis_client.smembers(keys.CONNECTIONS) == {"acme"}


def test_no_secret_in_redis_or_repr(*, store: ConnectionStore, redis_client: redis.Redis, secret_file: Path,
                                    key_file: Path, refresh_file: Path, key_pem: str) -> None:
    conns = [
        connect_cc(store, "cc", secret_file),
        store.connect("jwt", environment="production", login_url=LOGIN, client_id="cid",
                      private_key_file=str(key_file), username="u@example.com"),
        store.connect("rt", environment="production", login_url=LOGIN, client_id="cid",
                      refresh_token_file=str(refresh_file), client_secret_file=str(secret_file)),
    ]
    stored = redis_text(redis_client)
    assert str(secret_file) in stored  # the scan does see the references: it would see a secret too
    key_body = key_pem.splitlines()[1]
    for secret in (SECRET, REFRESH, key_body):
        assert secret not in stored
        for conn in [*conns, *store.all()]:
            assert secret not in repr(conn)
            assert secret not in str(conn)
            assert secret not in str(conn.to_json())


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_missing_or_empty_secret_file_is_refused(store: ConnectionStore, redis_client: redis.Redis,
                                                 tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConnectionRefused, match=f"client secret: secret file {path} ") as caught:
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                      client_secret_file=str(path))
    assert isinstance(caught.value, InvalidInput)
    assert snapshot(redis_client) == {}


def test_directory_and_unreadable_secret_files_are_refused(store: ConnectionStore, redis_client: redis.Redis,
                                                           tmp_path: Path, secret_file: Path) -> None:
    with pytest.raises(ConnectionRefused, match="not a regular file"):
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                      client_secret_file=str(tmp_path))
    if os.geteuid() != 0:  # root reads any file: the permission check cannot be exercised
        secret_file.chmod(0)
        with pytest.raises(ConnectionRefused, match="not readable: Permission denied") as caught:
            connect_cc(store, "acme", secret_file)
        assert SECRET not in str(caught.value)
    assert snapshot(redis_client) == {}


def test_missing_refresh_token_key_and_ca_files_are_refused(store: ConnectionStore, tmp_path: Path,
                                                            secret_file: Path, redis_client: redis.Redis) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConnectionRefused, match=r"refresh token: secret file .*nope does not exist"):
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                      refresh_token_file=missing)
    with pytest.raises(ConnectionRefused, match=r"private key: secret file .*nope does not exist"):
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                      private_key_file=missing, username="u@example.com")
    with pytest.raises(ConnectionRefused, match=r"CA bundle: .*nope does not exist or is not a readable file"):
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                      client_secret_file=str(secret_file), ca_bundle=missing)
    assert snapshot(redis_client) == {}


def test_private_key_that_is_not_a_pem_key_is_refused(store: ConnectionStore, secret_file: Path) -> None:
    with pytest.raises(ConnectionRefused, match="is not an unencrypted PEM private key") as caught:
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid",
                      private_key_file=str(secret_file), username="u@example.com")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("url", [
    "http://login.salesforce.com", "ftp://login.salesforce.com", "login.salesforce.com", "https://",
    "https://user:pw@login.salesforce.com", "https://login.salesforce.com?x=1", "https://login.salesforce.com#f",
    "https://login.salesforce.com:99999", "",
])
def test_login_url_must_be_plain_https(store: ConnectionStore, secret_file: Path, url: str,
                                       redis_client: redis.Redis) -> None:
    with pytest.raises(ConnectionRefused, match="login URL"):
        connect_cc(store, "acme", secret_file, login_url=url)
    assert snapshot(redis_client) == {}


@pytest.mark.parametrize(("options", "message"), [
    ({}, "no credentials given"),
    ({"client_secret_file": "S", "client_secret_env": "X"}, "not both"),
    ({"private_key_file": "K"}, "needs both a private key file and a username"),
    ({"username": "u@example.com"}, "needs both a private key file and a username"),
    ({"private_key_file": "K", "username": "u", "client_secret_file": "S"}, "takes no client secret"),
    ({"private_key_file": "K", "username": "u", "refresh_token_file": "R"}, "two different grants"),
])
def test_grant_options_are_checked(*, store: ConnectionStore, secret_file: Path, key_file: Path, refresh_file: Path,
                                   monkeypatch: pytest.MonkeyPatch, options: dict[str, str], message: str,
                                   redis_client: redis.Redis) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_X", SECRET)
    files = {"S": str(secret_file), "K": str(key_file), "R": str(refresh_file), "X": "CRMSYNC_SECRET_X"}
    resolved = {name: files.get(value, value) for name, value in options.items()}
    with pytest.raises(ConnectionRefused, match=message):
        store.connect("acme", environment="production", login_url=LOGIN, client_id="cid", **resolved)
    assert snapshot(redis_client) == {}


@pytest.mark.parametrize(("field", "value"), [("environment", "prod"), ("client_id", ""), ("client_id", "a b"),
                                              ("username", " u")])
def test_other_bad_input_is_refused(store: ConnectionStore, key_file: Path, field: str, value: str) -> None:
    options = {"environment": "production", "client_id": "cid", "username": "u@example.com", field: value}
    with pytest.raises(ConnectionRefused):
        store.connect("acme", login_url=LOGIN, private_key_file=str(key_file), **options)


def test_tenant_ids_are_validated(store: ConnectionStore, secret_file: Path) -> None:
    with pytest.raises(InvalidTenant):
        connect_cc(store, "Acme{x}", secret_file)
    with pytest.raises(InvalidTenant):
        store.get("bad tenant")


def test_not_connected_and_corrupt_records(store: ConnectionStore, redis_client: redis.Redis,
                                           secret_file: Path) -> None:
    with pytest.raises(NotConnected, match="'acme' is not connected"):
        store.get("acme")
    connect_cc(store, "acme", secret_file)
    connect_cc(store, "globex", secret_file)
    redis_client.hdel(keys.connection("globex"), "grant")
    with pytest.raises(NotConnected, match="incomplete or corrupt"):
        store.get("globex")
    # A listed tenant whose record is gone or corrupt is left out of the listing, not fatal to it.
    redis_client.sadd(keys.CONNECTIONS, "ghost")
    assert [c.tenant for c in store.all()] == ["acme"]


def test_error_classes_form_the_documented_tree() -> None:
    assert issubclass(ConnectionRefused, WorkerError)
    assert issubclass(ConnectionRefused, InvalidInput)
    assert issubclass(ConnectionRefused, ValueError)
    assert issubclass(NotConnected, WorkerError)
    assert not issubclass(NotConnected, InvalidInput)


def test_store_works_with_a_bytes_client(redis_url: str, redis_client: redis.Redis, secret_file: Path) -> None:
    raw = cast(redis.Redis, connect(redis_url))  # decode_responses=False: the worker may build its clients this way
    try:
        store = ConnectionStore(raw)
        conn = connect_cc(store, "acme", secret_file, environment="sandbox")
        assert store.get("acme") == conn
        assert store.all() == [conn]
        connect_cc(store, "acme", secret_file, environment="production")
        assert store.get("acme").ever_production is True
        with pytest.raises(ConnectionRefused):
            connect_cc(store, "acme", secret_file, environment="sandbox")
    finally:
        raw.close()
