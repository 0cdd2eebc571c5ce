"""Secrets confined: references only into CRMSYNC_SECRET_DIRS or CRMSYNC_SECRET_* variables, tokens requested only
from Salesforce login hosts or CRMSYNC_LOGIN_HOSTS; refused at connect (exit 2, nothing written) and again by the
token client before it reads a secret or sends a request."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from emulator import EmulatorServer
from quota.errors import InvalidInput
from worker import keys
from worker.errors import AuthFailed, ConnectionRefused, DeliveryFailed, SecretUnavailable
from worker.notifications.channels import EmailSettings, password_ref
from worker.notifications.model import Notification
from worker.notifications.smtp import send_email
from worker.salesforce.connections import ConnectionStore, check_login_url
from worker.salesforce.oauth import TokenClient
from worker.secrets import env_ref, file_ref, read_secret
from worker.settings import SecretSettings

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
SECRET = "confined-secret-0123456789abcdef"
TOKEN_REQUEST = "POST /services/oauth2/token"


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    return directory


@pytest.fixture
def settings(secret_dir: Path) -> SecretSettings:
    return SecretSettings(secret_dirs=(secret_dir,))


@pytest.fixture
def inside(secret_dir: Path) -> Path:
    path = secret_dir / "acme.secret"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable secret next to the secret directory, not in it."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    path = directory / "other-tenant.secret"
    path.write_text(SECRET)
    return path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path ``os.open`` is asked for from here on: a refused reference must open nothing."""
    calls: list[str] = []
    real_open = os.open

    def spy(path: str, *args: int, **kwargs: int) -> int:
        calls.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return calls


# -- settings --------------------------------------------------------------------------------------------------

def test_settings_defaults_and_values() -> None:
    assert SecretSettings.from_env({}) == SecretSettings(secret_dirs=(Path("/run/secrets"),), login_hosts=())
    read = SecretSettings.from_env({"CRMSYNC_SECRET_DIRS": "/run/secrets:/etc/crmsync/keys/",
                                    "CRMSYNC_LOGIN_HOSTS": " Login.Example.com, 127.0.0.1:8443 ,[::1]:9443,"})
    assert read.secret_dirs == (Path("/run/secrets"), Path("/etc/crmsync/keys"))
    assert read.login_hosts == (("login.example.com", None), ("127.0.0.1", 8443), ("::1", 9443))


@pytest.mark.parametrize(("name", "value"), [
    ("CRMSYNC_SECRET_DIRS", "run/secrets"), ("CRMSYNC_SECRET_DIRS", "/"), ("CRMSYNC_SECRET_DIRS", "/run:/"),
    ("CRMSYNC_SECRET_DIRS", "/proc/.."),
    ("CRMSYNC_LOGIN_HOSTS", "https://login.example.com"), ("CRMSYNC_LOGIN_HOSTS", "login.example.com/path"),
    ("CRMSYNC_LOGIN_HOSTS", "user@login.example.com"), ("CRMSYNC_LOGIN_HOSTS", "*.example.com"),
    ("CRMSYNC_LOGIN_HOSTS", "host:99999"), ("CRMSYNC_LOGIN_HOSTS", "host:port"), ("CRMSYNC_LOGIN_HOSTS", "a b"),
])
def test_bad_settings_are_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        SecretSettings.from_env({name: value})


# -- secret references -----------------------------------------------------------------------------------------

def test_a_file_inside_a_secret_directory_is_read(inside: Path, settings: SecretSettings, tmp_path: Path) -> None:
    assert read_secret(file_ref(str(inside)), settings) == SECRET
    # Kubernetes mounts a Secret as symlinks into a timestamped directory of the same mount: followed, still inside.
    mount = tmp_path / "k8s"
    (mount / "..2026_01_01").mkdir(parents=True)
    (mount / "..2026_01_01" / "acme.secret").write_text(SECRET)
    (mount / "..data").symlink_to("..2026_01_01")
    (mount / "acme.secret").symlink_to("..data/acme.secret")
    # A second directory in the list, itself reached through a symlink.
    (tmp_path / "mounted-here").symlink_to(mount)
    both = SecretSettings(secret_dirs=(*settings.secret_dirs, tmp_path / "mounted-here"))
    assert read_secret(f"file:{tmp_path / 'mounted-here' / 'acme.secret'}", both) == SECRET


def test_a_file_outside_the_secret_directories_is_refused_unopened(
        settings: SecretSettings, secret_dir: Path, outside: Path, tmp_path: Path, opened: list[str]) -> None:
    (secret_dir / "link").symlink_to(outside)
    (tmp_path / "secrets-2").mkdir()  # shares the directory's name as a prefix, not its contents
    (tmp_path / "secrets-2" / "x").write_text(SECRET)
    refs = [
        "file:/proc/self/environ",
        f"file:{outside}",
        f"file:{secret_dir / 'link'}",                       # a symlink out of the directory
        file_ref(f"{secret_dir}/../elsewhere/{outside.name}"),   # '..' out of it
        f"file:{secret_dir}/../elsewhere/{outside.name}",       # '..' stored as written (by hand)
        f"file:{tmp_path / 'secrets-2' / 'x'}",
        f"file:{secret_dir}",                                # the directory itself
    ]
    for ref in refs:
        with pytest.raises(SecretUnavailable, match="outside the secret directories") as caught:
            read_secret(ref, settings)
        assert SECRET not in str(caught.value)
    assert opened == []


def test_a_reference_of_no_known_kind_is_refused_unquoted(settings: SecretSettings, opened: list[str]) -> None:
    for ref in (SECRET, "file:relative/path", f"vault:{SECRET}", ""):
        with pytest.raises(SecretUnavailable, match="invalid secret reference: use file:/absolute/path or env:NAME") \
                as caught:
            read_secret(ref, settings)
        assert SECRET not in str(caught.value)
    assert opened == []


def test_the_default_secret_directory_is_run_secrets(inside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRMSYNC_SECRET_DIRS")
    with pytest.raises(SecretUnavailable, match=r"outside the secret directories \(/run/secrets\)"):
        read_secret(file_ref(str(inside)))


def test_secret_variables_must_be_named_crmsync_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_ACME", SECRET)
    assert read_secret(env_ref("CRMSYNC_SECRET_ACME")) == SECRET
    for name in ("REDIS_URL", "CRMSYNC_SECRET_", "CRMSYNC_SECRET_DIRS", "crmsync_secret_acme", "CRMSYNC_SECRETX"):
        with pytest.raises(SecretUnavailable, match="must be named CRMSYNC_SECRET_"):
            env_ref(name)
        with pytest.raises(SecretUnavailable, match="must be named CRMSYNC_SECRET_"):
            read_secret(f"env:{name}")  # a reference stored before the rule, or by hand


# -- login URLs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "stored"), [
    ("https://login.salesforce.com", "https://login.salesforce.com"),
    ("https://test.salesforce.com/", "https://test.salesforce.com"),
    ("https://LOGIN.Salesforce.com:443", "https://login.salesforce.com"),
    ("https://acme.my.salesforce.com", "https://acme.my.salesforce.com"),
    ("https://acme-corp2.my.salesforce.com", "https://acme-corp2.my.salesforce.com"),
    ("https://acme--uat.sandbox.my.salesforce.com", "https://acme--uat.sandbox.my.salesforce.com"),
    ("https://emu.example.test:8443", "https://emu.example.test:8443"),
    ("https://127.0.0.1:9443", "https://127.0.0.1:9443"),
    ("https://login.partner.test", "https://login.partner.test"),
    ("https://[::1]:7443", "https://[::1]:7443"),
])
def test_allowed_login_urls(url: str, stored: str) -> None:
    settings = SecretSettings(login_hosts=(("emu.example.test", None), ("127.0.0.1", 9443),
                                           ("login.partner.test", 443), ("::1", None)))
    assert check_login_url(url, settings) == stored


@pytest.mark.parametrize("url", [
    "https://evil.example",
    "http://login.salesforce.com",
    "https://login.salesforce.com.evil.example",
    "https://x.my.salesforce.com@evil.example",
    "https://evil.example#@login.salesforce.com",
    "https://evil.example\\@login.salesforce.com",
    "https://login.salesforce.com:8443",
    "https://login.salesforce.com/services/oauth2/token",
    "https://salesforce.com",
    "https://my.salesforce.com",
    "https://a.b.my.salesforce.com",
    "https://acme--uat.my.salesforce.com.sandbox.evil.example",
    "https://acme.sandbox.my.salesforce.com",
    "https://-acme.my.salesforce.com",
    "https://login.salesforce.com\t",
    "https://l\u043egin.salesforce.com",  # a Cyrillic o
    "https://127.0.0.1:9444",  # listed with another port
    "https://login.partner.test:8443",  # listed on 443 only
])
def test_refused_login_urls(url: str) -> None:
    settings = SecretSettings(login_hosts=(("127.0.0.1", 9443), ("login.partner.test", 443)))
    with pytest.raises(ConnectionRefused, match="invalid login URL"):
        check_login_url(url, settings)


def test_a_refused_login_url_is_quoted_without_what_could_be_credentials() -> None:
    # The worker's refusal of a stored URL becomes a pause detail, a notification and a log line.
    for url in ("https://user:hunter2@evil.example", "https://evil.example/?token=hunter2",
                "http://login.salesforce.com/#hunter2", "https://x.my.salesforce.com@evil.example/p?hunter2"):
        with pytest.raises(ConnectionRefused, match="invalid login URL") as caught:
            check_login_url(url, SecretSettings())
        assert "hunter2" not in str(caught.value)


# -- crmsync connect -------------------------------------------------------------------------------------------

def connect(env: dict[str, str], *options: str, login_url: str = "https://login.salesforce.com",
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRMSYNC, "connect", "acme", "--environment", "production", "--login-url", login_url,
                           "--client-id", "cid", *options],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def cli_env(redis_url: str, secret_dir: Path) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "CRMSYNC_SECRET_DIRS": str(secret_dir),
           "REDIS_LIKE_VARIABLE": SECRET}
    env.pop("CRMSYNC_LOGIN_HOSTS", None)
    return env


def test_connect_refuses_secrets_and_hosts_outside_the_rules(cli_env: dict[str, str], redis_client: redis.Redis,
                                                             secret_dir: Path, inside: Path, outside: Path) -> None:
    (secret_dir / "link").symlink_to(outside)
    cases: list[tuple[list[str], str, str]] = [
        (["--client-secret-file", "/proc/self/environ"], "https://login.salesforce.com", "outside the secret"),
        (["--client-secret-file", str(secret_dir / "link")], "https://login.salesforce.com", "outside the secret"),
        (["--client-secret-file", f"{secret_dir}/../elsewhere/{outside.name}"], "https://login.salesforce.com",
         "outside the secret"),
        (["--client-secret-file", f"../elsewhere/{outside.name}"], "https://login.salesforce.com",
         "outside the secret"),  # relative, from inside the secret directory (cwd below)
        (["--private-key-file", str(outside), "--username", "u@example.com"], "https://login.salesforce.com",
         "outside the secret"),
        (["--refresh-token-file", str(outside)], "https://login.salesforce.com", "outside the secret"),
        (["--client-secret-env", "REDIS_URL"], "https://login.salesforce.com", "must be named CRMSYNC_SECRET_"),
        (["--client-secret-env", "REDIS_LIKE_VARIABLE"], "https://login.salesforce.com",
         "must be named CRMSYNC_SECRET_"),
        (["--client-secret-file", str(inside)], "https://evil.example", "not a Salesforce login host"),
        (["--client-secret-file", str(inside)], "http://login.salesforce.com", "invalid login URL"),
        (["--client-secret-file", str(inside)], "https://login.salesforce.com.evil.example",
         "not a Salesforce login host"),
        (["--client-secret-file", str(inside)], "https://x.my.salesforce.com@evil.example", "user info"),
    ]
    for options, url, reason in cases:
        done = connect(cli_env, *options, login_url=url, cwd=secret_dir)
        assert done.returncode == 2, (options, url, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("crmsync: error: ")
        assert reason in lines[0], (options, url, lines[0])
        assert SECRET not in done.stderr + done.stdout
        assert done.stdout == ""
        assert redis_client.keys("*") == []


def test_connect_accepts_the_allowed_forms(cli_env: dict[str, str], redis_client: redis.Redis, secret_dir: Path,
                                          inside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (secret_dir / "current").symlink_to(inside.name)  # a symlink that stays inside
    accepted = [
        (["--client-secret-file", str(inside)], "https://login.salesforce.com", cli_env),
        (["--client-secret-file", str(secret_dir / "current")], "https://test.salesforce.com", cli_env),
        (["--client-secret-file", "acme.secret"], "https://acme.my.salesforce.com", cli_env),  # relative
        (["--client-secret-env", "CRMSYNC_SECRET_ACME"], "https://acme--uat.sandbox.my.salesforce.com",
         {**cli_env, "CRMSYNC_SECRET_ACME": SECRET}),
        (["--client-secret-file", str(inside)], "https://emu.example.test:8443",
         {**cli_env, "CRMSYNC_LOGIN_HOSTS": "emu.example.test"}),
    ]
    for options, url, env in accepted:
        done = connect(env, *options, login_url=url, cwd=secret_dir)
        assert done.returncode == 0, (options, url, done.stderr)
        stored = redis_client.hgetall(keys.connection("acme"))
        assert stored["login_url"] == url
        assert SECRET not in str(stored)
    assert redis_client.hget(keys.connection("acme"), "client_secret_ref") == f"file:{inside}"


def test_malformed_settings_make_connect_exit_2(cli_env: dict[str, str], inside: Path,
                                               redis_client: redis.Redis) -> None:
    for name, value in (("CRMSYNC_SECRET_DIRS", "relative/dir"), ("CRMSYNC_LOGIN_HOSTS", "https://x")):
        done = connect({**cli_env, name: value}, "--client-secret-file", str(inside))
        assert done.returncode == 2
        assert done.stderr.startswith(f"crmsync: error: {name}=")
        assert len(done.stderr.splitlines()) == 1
    assert redis_client.keys("*") == []


def test_connect_in_process_writes_nothing_when_refused(redis_client: redis.Redis, settings: SecretSettings,
                                                       outside: Path) -> None:
    store = ConnectionStore(redis_client, secrets=settings)
    with pytest.raises(ConnectionRefused, match="outside the secret directories"):
        store.connect("acme", environment="production", login_url="https://login.salesforce.com", client_id="c",
                      client_secret_file=str(outside))
    assert redis_client.keys("*") == []


# -- the SMTP password shares the references -------------------------------------------------------------------

def test_smtp_password_references_follow_the_same_rules(cli_env: dict[str, str], redis_client: redis.Redis,
                                                        outside: Path, secret_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for option, value in (("--password-file", "/proc/self/environ"), ("--password-file", str(outside)),
                          ("--password-env", "REDIS_URL")):
        done = subprocess.run([CRMSYNC, "notify", "email", "set", "--host", "smtp.example.com", "--port", "587",
                               "--from", "crmsync@example.com", "--to", "ops@example.com", "--username", "u",
                               option, value], env=cli_env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1
        assert "SMTP password" in done.stderr
        assert redis_client.keys("*") == []
    monkeypatch.setenv("CRMSYNC_SECRET_DIRS", str(secret_dir))
    with pytest.raises(InvalidInput, match=r"SMTP password: secret file .* is outside the secret directories"):
        password_ref(str(outside), None)


def test_a_stored_smtp_password_outside_is_not_read_at_delivery(opened: list[str]) -> None:
    email = EmailSettings(host="127.0.0.1", port=9, sender="crmsync@example.com", recipients=("ops@example.com",),
                          username="u", password_ref="file:/proc/self/environ")
    notice = Notification(id="0" * 32, at=datetime(2026, 11, 29, 12, tzinfo=UTC), kind="quota_exhausted",
                          tenant="acme", window="w", message="m", details={})
    with pytest.raises(DeliveryFailed, match="outside the secret directories") as caught:
        send_email(email, notice)
    assert caught.value.permanent
    assert opened == []


# -- the token client re-checks what is stored -----------------------------------------------------------------

@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(orgs=["acme"], records=1) as server:
        yield server


def test_token_client_refuses_a_stored_connection_before_reading_or_sending(
        *, emu: EmulatorServer, redis_client: redis.Redis, secret_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, opened: list[str]) -> None:
    org = emu.orgs["acme"]
    (secret_dir / "acme.secret").write_text(org.client_secret)
    (tmp_path / "acme.secret").write_text(org.client_secret)  # the right secret, in the wrong place
    monkeypatch.setenv("PLAIN_VARIABLE", org.client_secret)
    strict = SecretSettings(secret_dirs=(secret_dir,), login_hosts=(("127.0.0.1", None),))
    store = ConnectionStore(redis_client, secrets=strict)
    good = store.connect("acme", environment="production", login_url=emu.base_url, client_id=org.client_id,
                         client_secret_file=str(secret_dir / "acme.secret"), ca_bundle=emu.ca_bundle)
    emu.control.clear_log("acme")
    # The control: as connected, the token request goes out and the emulator sees it.
    TokenClient(good, secrets=strict).fetch()
    assert emu.control.request_counts("acme") == {TOKEN_REQUEST: 1}
    emu.control.clear_log("acme")
    opened.clear()

    by_hand = {  # each field as a connection stored before the rules, or written into Redis by hand
        "client_secret_ref": [f"file:{tmp_path / 'acme.secret'}", "file:/proc/self/environ", "env:PLAIN_VARIABLE"],
        "login_url": [emu.base_url.replace("127.0.0.1", "localhost"), "https://evil.example",
                      f"https://x.my.salesforce.com@127.0.0.1:{emu.base_url.rsplit(':', 1)[1]}"],
    }
    for field, values in by_hand.items():
        for value in values:
            redis_client.hset(keys.connection("acme"), field, value)
            stored = store.get("acme")
            with pytest.raises(AuthFailed) as caught:
                TokenClient(stored, secrets=strict).fetch()
            assert caught.value.error == ("secret_unreadable" if field == "client_secret_ref"
                                          else "login_url_refused"), value
            with pytest.raises(AuthFailed):
                TokenClient(stored, secrets=strict).refresh()
            assert org.client_secret not in str(caught.value)
            redis_client.hset(keys.connection("acme"), field, getattr(good, field))
    assert emu.control.request_counts("acme") == {}
    assert opened == []
