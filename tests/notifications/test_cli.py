"""``crmsync notify ...`` and ``crmsync notifications``, run in-process through their own parser on a real Redis."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import redis

from quota.errors import InvalidInput
from worker import keys
from worker.cli import register
from worker.errors import CommandError
from worker.notifications import NotificationCenter
from worker.notifications.channels import webhook_id

PASSWORD = "smtp-pass-0123456789"
# A chat webhook: its token is the path (and here a query too); only the host and id may ever be shown.
HOOK = "https://hooks.example.test/services/T1/B2/PATHS3CRET?token=S3CRET"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="crmsync")
    register(parser.add_subparsers(dest="command", required=True), "notify", "notifications")
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CRMSYNC_SECRET_DIRS", str(tmp_path))
    path = tmp_path / "smtp-password"
    path.write_text(PASSWORD)
    return str(path)


def email_args(*extra: str) -> list[str]:
    return ["notify", "email", "set", "--host", "smtp.example.test", "--port", "587",
            "--from", "crmsync@example.com", "--to", "ops@example.com, oncall@example.org", *extra]


def show_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert run("notify", "show", "--json") == 0
    shown: dict[str, object] = json.loads(capsys.readouterr().out)
    return shown


def test_webhooks_are_shown_by_id_and_host_only(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    hook_id, local_id = webhook_id(HOOK), webhook_id("http://127.0.0.1:8080/hook")
    assert run("notify", "webhook", "add", HOOK) == 0
    assert run("notify", "webhook", "add", HOOK) == 0  # the same URL twice is one webhook
    assert run("notify", "webhook", "add", "http://u:pw@127.0.0.1:8080/hook") == 0
    assert capsys.readouterr().out.splitlines() == [f"webhook {hook_id} (hooks.example.test) added"] * 2 + [
        f"webhook {webhook_id('http://u:pw@127.0.0.1:8080/hook')} (127.0.0.1:8080) added"]
    assert run("notify", "webhook", "remove", "http://u:pw@127.0.0.1:8080/hook") == 0
    assert run("notify", "webhook", "add", "http://127.0.0.1:8080/hook") == 0
    capsys.readouterr()
    shown = show_json(capsys)
    hooks = shown["webhooks"]
    assert isinstance(hooks, list)
    assert [(h["id"], h["host"]) for h in hooks] == [(hook_id, "hooks.example.test"), (local_id, "127.0.0.1:8080")]
    assert set(hooks[0]) == {"id", "host", "added_at"}
    assert shown["email"] is None
    assert run("notify", "show") == 0
    text = capsys.readouterr().out
    assert f"webhook     {hook_id}  hooks.example.test\n" in text
    assert "/services" not in text
    assert "S3CRET" not in text

    assert run("notify", "webhook", "remove", HOOK) == 0
    assert run("notify", "webhook", "remove", local_id) == 0  # by the id `notify show` lists
    assert capsys.readouterr().out.splitlines() == [f"webhook {hook_id} (hooks.example.test) removed",
                                                    f"webhook {local_id} (127.0.0.1:8080) removed"]
    assert show_json(capsys)["webhooks"] == []
    with pytest.raises(InvalidInput, match="no such webhook") as refused:
        run("notify", "webhook", "remove", HOOK)
    assert "S3CRET" not in str(refused.value)


@pytest.mark.parametrize("url", ["ftp://example.test/x/S3CRET", "example.test/hook/S3CRET", "https://",
                                 "http://a b.test/S3CRET", "https://example.test:99999/x/S3CRET?t=S3CRET",
                                 "javascript:alert(1)//S3CRET", "https://[::1/S3CRET"])
def test_bad_webhook_urls_write_nothing(env: redis.Redis, url: str) -> None:
    with pytest.raises(InvalidInput, match="invalid webhook URL") as refused:
        run("notify", "webhook", "add", url)
    assert "S3CRET" not in str(refused.value)
    assert env.exists(keys.NOTIFY_CONFIG) == 0


def test_email_set_show_and_clear(env: redis.Redis, password_file: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*email_args("--starttls", "--username", "crmsync", "--password-file", password_file)) == 0
    email = show_json(capsys)["email"]
    assert email == {"host": "smtp.example.test", "port": 587, "from": "crmsync@example.com",
                     "to": ["ops@example.com", "oncall@example.org"], "starttls": True, "username": "crmsync",
                     "password_ref": f"file:{password_file}"}
    assert run("notify", "show") == 0
    text = capsys.readouterr().out
    assert "email       smtp.example.test:587 from crmsync@example.com to ops@example.com, oncall@example.org" in text
    assert PASSWORD not in text
    assert PASSWORD not in json.dumps(env.hgetall(keys.NOTIFY_CONFIG))

    assert run("notify", "email", "clear") == 0
    assert show_json(capsys)["email"] is None


def test_email_password_from_the_environment(env: redis.Redis, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_SMTP_PASSWORD", PASSWORD)
    assert run(*email_args("--username", "crmsync", "--password-env", "CRMSYNC_SECRET_SMTP_PASSWORD")) == 0
    email = show_json(capsys)["email"]
    assert isinstance(email, dict)
    assert email["password_ref"] == "env:CRMSYNC_SECRET_SMTP_PASSWORD"
    assert PASSWORD not in json.dumps(env.hgetall(keys.NOTIFY_CONFIG))


@pytest.mark.parametrize(("args", "error"), [
    (["--port", "0"], "invalid SMTP port"),
    (["--port", "65536"], "invalid SMTP port"),
    (["--port", "25a"], "invalid SMTP port"),
    (["--to", "not-an-address"], "invalid email address"),
    (["--to", ","], "at least one recipient"),
    (["--from", "crmsync@localhost"], "invalid email address"),
    (["--host", "smtp example"], "invalid SMTP host"),
    (["--username", "crmsync"], "together with --password-file"),
    (["--password-env", "CRMSYNC_SECRET_UNSET_PASSWORD", "--username", "u"], "is not set"),
    (["--password-file", "{dir}/nonexistent-pw", "--username", "u"], "does not exist"),
])
def test_bad_email_settings_write_nothing(env: redis.Redis, args: list[str], error: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_DIRS", str(tmp_path))
    args = [a.format(dir=tmp_path) for a in args]
    base = email_args()
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    with pytest.raises(InvalidInput, match=error):
        run(*base)
    assert env.exists(keys.NOTIFY_CONFIG) == 0


def test_notifications_listed_newest_first(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    center = NotificationCenter(env)
    center.notify("quota_warning", "acme", "acme used 80% of its credits", window="w1:0.8", used=80, limit=100)
    center.notify("auth_failed", "globex", "globex: token refused", window="j1", job_id="j1")
    center.notify("quota_exhausted", "acme", "acme is out of credits", window="w1", used=100, limit=100)
    capsys.readouterr()  # structlog's default output (stdout) for the notifications just raised

    assert run("notifications", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["tenant"]) for r in rows] == [("quota_exhausted", "acme"), ("auth_failed", "globex"),
                                                        ("quota_warning", "acme")]
    assert rows[0]["details"] == {"used": 100, "limit": 100}
    assert rows[0]["at"].endswith("+00:00")

    assert run("notifications", "acme", "--limit", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].split()[1:3] == ["quota_exhausted", "acme"]
    assert lines[0].endswith("acme is out of credits")

    assert run("notifications", "initech") == 0
    assert capsys.readouterr().out == "no notifications for initech\n"
    with pytest.raises(InvalidInput):
        run("notifications", "--limit", "0")
    with pytest.raises(InvalidInput):
        run("notifications", "Bad Tenant")


def test_unreachable_redis_is_one_line_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(CommandError, match="Redis unavailable") as raised:
        run("notify", "show")
    assert raised.value.exit_code == 1
