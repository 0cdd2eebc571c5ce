"""The quota admin commands, run as a user runs them: the installed `crmsync` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from worker import keys


def crmsync(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("crmsync")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "worker.cli"]
    env = {**os.environ, "REDIS_URL": redis_url, "CRMSYNC_ACTOR": "ops@example.com"}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def snapshot(client: redis.Redis) -> dict[str, object]:
    return {k: client.dump(k) for k in client.keys("*")}


def test_set_then_show_history_and_status(redis_url: str, redis_client: redis.Redis) -> None:
    done = crmsync(redis_url, "quota", "set", "acme", "150000", "--reset-at", "06:00")
    assert done.returncode == 0, done.stderr
    assert "150,000" in done.stdout

    shown = json.loads(crmsync(redis_url, "quota", "show", "acme", "--json").stdout)
    assert shown["limit"] == 150_000
    assert shown["used"] == 0
    assert shown["remaining"] == 150_000
    assert shown["percent_used"] == 0.0
    assert shown["reset_at"] == "06:00"
    assert shown["resets_at"].endswith("06:00:00+00:00")

    human = crmsync(redis_url, "quota", "show", "acme").stdout
    assert "limit       150,000" in human
    assert "next reset" in human

    history = json.loads(crmsync(redis_url, "quota", "history", "acme", "--json").stdout)
    assert {(h["actor"], h["field"], h["old"], h["new"]) for h in history} == {
        ("ops@example.com", "limit", None, "150000"),
        ("ops@example.com", "reset_at", None, "06:00"),
    }
    assert all(h["at"].endswith("+00:00") for h in history)

    crmsync(redis_url, "quota", "set", "globex", "100000")
    rows = json.loads(crmsync(redis_url, "status", "--json").stdout)
    assert [r["tenant"] for r in rows] == ["acme", "globex"]
    assert "globex" in crmsync(redis_url, "status").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["quota", "set", "acme", "99999"],
        ["quota", "set", "acme", "0"],
        ["quota", "set", "acme", "-100000"],
        ["quota", "set", "acme", "1e6"],
        ["quota", "set", "acme", "150000.5"],
        ["quota", "set", "acme", "150,000"],
        ["quota", "set", "acme", "lots"],
        ["quota", "set", "acme", ""],
        ["quota", "set", "acme", "99999999999999999999"],
    ],
)
def test_refused_limits_exit_2_name_the_minimum_and_write_nothing(
    redis_url: str, redis_client: redis.Redis, args: list[str]
) -> None:
    crmsync(redis_url, "quota", "set", "acme", "120000")
    before = snapshot(redis_client)
    done = crmsync(redis_url, *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "100,000" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(redis_client) == before


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["quota", "set", "acme", "150000", "--reset-at", "24:00"], "HH:MM"),
        (["quota", "set", "acme", "150000", "--reset-at", "6am"], "HH:MM"),
        (["quota", "set", "acme", "150000", "--window", "weekly"], "daily"),
        (["quota", "set", "acme", "150000", "--window", "ROLLING"], "rolling"),
        (["quota", "set", "acme", "150000", "--reserve", "-1"], "reserve"),
        (["quota", "set", "acme", "150000", "--reserve", "1.5"], "reserve"),
        (["quota", "set", "acme", "150000", "--reserve", "150000"], "below the limit"),
        (["quota", "set", "acme", "150000", "--reserve", "lots"], "reserve"),
        (["quota", "set", "Acme", "150000"], "tenant"),
        (["quota", "show", "a{b}"], "tenant"),
        (["quota", "history", "a:b"], "tenant"),
    ],
)
def test_other_bad_input_exits_2_with_one_line(
    redis_url: str, redis_client: redis.Redis, args: list[str], reason: str
) -> None:
    done = crmsync(redis_url, *args)
    assert done.returncode == 2
    assert reason in done.stderr
    assert done.stderr.count("\n") == 1
    assert redis_client.dbsize() == 0


def test_show_reports_hand_written_garbage_without_crashing(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.hset(keys.config("acme"), "limit", "lots")
    redis_client.sadd(keys.TENANTS, "acme")
    shown = crmsync(redis_url, "quota", "show", "acme", "--json")
    assert shown.returncode == 1, shown.stderr  # shown, and the exit status says the tenant gets no credits
    data = json.loads(shown.stdout)
    assert (data["limit_state"], data["remaining"]) == ("invalid", 0)
    assert "100,000" in data["config_error"]
    assert "INVALID" in crmsync(redis_url, "status").stdout


def test_window_and_reserve_are_set_shown_and_audited(redis_url: str) -> None:
    done = crmsync(redis_url, "quota", "set", "acme", "150000", "--window", "rolling", "--reserve", "20000")
    assert done.returncode == 0, done.stderr
    assert "reserve 20,000, rolling 24 hours" in done.stdout
    shown = json.loads(crmsync(redis_url, "quota", "show", "acme", "--json").stdout)
    assert (shown["window"], shown["reserve"], shown["available"]) == ("rolling", 20_000, 130_000)
    human = crmsync(redis_url, "quota", "show", "acme").stdout
    assert "20,000 (kept for essential jobs)" in human
    assert "rolling: each credit comes back 24-25 hours after it was taken" in human
    history = json.loads(crmsync(redis_url, "quota", "history", "acme", "--json").stdout)
    assert {(h["field"], h["new"]) for h in history} >= {("window", "rolling"), ("reserve", "20000")}
    kept = crmsync(redis_url, "quota", "set", "acme", "160000")  # options left out keep what is set
    assert kept.returncode == 0, kept.stderr
    shown = json.loads(crmsync(redis_url, "quota", "show", "acme", "--json").stdout)
    assert (shown["limit"], shown["window"], shown["reserve"]) == (160_000, "rolling", 20_000)


def test_unreachable_redis_is_one_clear_line() -> None:
    done = crmsync("redis://127.0.0.1:1/0", "status")
    assert done.returncode == 1
    assert "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr
