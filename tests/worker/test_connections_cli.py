"""``crmsync connect`` and ``crmsync connections``, run in-process through their own parser on a real Redis."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest
import redis

from quota.errors import InvalidInput
from worker.cli import register
from worker.errors import CommandError, ConnectionRefused

SECRET = "cli-secret-value-abcdef0123456789"
LOGIN = "https://login.salesforce.com"


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="crmsync")
    register(built.add_subparsers(dest="command", required=True), "connect", "connections")
    return built


def run(*argv: str) -> int:
    args = parser().parse_args(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    return str(path)


def connect_args(tenant: str, environment: str, secret_file: str) -> list[str]:
    return ["connect", tenant, "--environment", environment, "--login-url", LOGIN, "--client-id", "cid-42",
            "--client-secret-file", secret_file]


def test_connect_then_list(env: redis.Redis, secret_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*connect_args("acme", "sandbox", secret_file)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"acme: connected to sandbox org at {LOGIN} (client_credentials grant, connection ")

    assert run(*connect_args("globex", "production", secret_file)) == 0
    capsys.readouterr()

    assert run("connections", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["tenant"], r["environment"], r["ever_production"]) for r in rows] == [
        ("acme", "sandbox", False), ("globex", "production", True)]
    assert rows[0]["client_secret_ref"] == f"file:{secret_file}"
    assert rows[0]["login_url"] == LOGIN
    assert rows[0]["client_id"] == "cid-42"
    assert rows[0]["grant"] == "client_credentials"
    assert rows[0]["connected_at"].endswith("+00:00")

    assert run("connections") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["TENANT", "ENVIRONMENT", "GRANT", "EVER-PROD", "CONNECTED-AT", "LOGIN-URL",
                                "CLIENT-ID"]
    assert table[1].split()[:4] == ["acme", "sandbox", "client_credentials", "no"]
    assert table[2].split()[:4] == ["globex", "production", "client_credentials", "yes"]
    assert table[2].split()[-2:] == [LOGIN, "cid-42"]


def test_no_secret_in_any_output(env: redis.Redis, secret_file: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_SF", SECRET)
    refresh = tmp_path / "refresh"
    refresh.write_text("refresh-" + SECRET)
    run(*connect_args("acme", "production", secret_file))
    run("connect", "globex", "--environment", "production", "--login-url", LOGIN, "--client-id", "c",
        "--client-secret-env", "CRMSYNC_SECRET_SF")
    run("connect", "initech", "--environment", "production", "--login-url", LOGIN, "--client-id", "c",
        "--refresh-token-file", str(refresh), "--client-secret-file", secret_file)
    run("connections")
    run("connections", "--json")
    captured = capsys.readouterr()
    assert "env:CRMSYNC_SECRET_SF" in captured.out  # references are shown...
    assert SECRET not in captured.out + captured.err  # ...secrets never


def test_production_to_sandbox_is_refused(env: redis.Redis, secret_file: str) -> None:
    run(*connect_args("acme", "production", secret_file))
    before = {k: env.dump(k) for k in env.keys("*")}
    with pytest.raises(ConnectionRefused, match="cannot be connected to a sandbox") as caught:
        run(*connect_args("acme", "sandbox", secret_file))
    assert isinstance(caught.value, InvalidInput)  # the main CLI turns it into exit 2 and a one-line message
    assert {k: env.dump(k) for k in env.keys("*")} == before


def test_missing_secret_file_is_refused(env: redis.Redis, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        run(*connect_args("acme", "production", str(tmp_path / "missing")))
    assert env.keys("*") == []


def test_invalid_tenant_is_refused(env: redis.Redis, secret_file: str) -> None:
    with pytest.raises(InvalidInput, match="invalid tenant id"):
        run(*connect_args("ACME!", "production", secret_file))


def test_unknown_environment_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["connect", "acme", "--environment", "staging", "--login-url", LOGIN,
                             "--client-id", "c", "--client-secret-env", "X"])
    assert caught.value.code == 2
    assert "invalid choice: 'staging'" in capsys.readouterr().err


def test_empty_listing(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("connections") == 0
    assert "no tenants connected" in capsys.readouterr().out
    assert run("connections", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_unreachable_redis_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    with pytest.raises(CommandError, match="connection store unavailable: ConnectionError") as caught:
        run("connections")
    assert caught.value.exit_code == 1
    assert caught.value.__cause__ is None
