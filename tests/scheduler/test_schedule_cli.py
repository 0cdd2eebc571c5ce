"""``crmsync schedule set|remove|list`` through their handlers, on a real Redis."""

from __future__ import annotations

import argparse
import json
import time

import pytest
import redis

from quota.errors import InvalidInput
from worker import keys
from worker.cli.schedule import register
from worker.enqueue import enqueue_pull
from worker.errors import CommandError
from worker.jobs.parking import PauseStore
from worker.scheduling.schedules import format_interval, parse_interval


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Parse ``argv`` with our subcommands and run the handler, mapping errors as ``crmsync`` does."""
    parser = argparse.ArgumentParser(prog="crmsync")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except (InvalidInput, CommandError) as exc:
        print(f"crmsync: error: {exc}", file=__import__("sys").stderr)
        code = getattr(exc, "exit_code", 2)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60), ("90s", 90), ("1m", 60), ("15m", 900), ("15M", 900), ("2h", 7200), ("1d", 86_400),
    ("30d", 30 * 86_400), (" 5m ", 300),
])
def test_parse_interval_accepts_units(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("seconds", [60, 90, 900, 3600, 5400, 86_400, 172_800])
def test_format_interval_round_trips(seconds: int) -> None:
    assert parse_interval(format_interval(seconds)) == seconds


def test_set_creates_a_schedule_due_now(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    before = time.time()
    code, out, _ = run(["schedule", "set", "acme", "Lead", "--every", "15m"], capsys)
    assert code == 0
    assert "acme/Lead: pull every 15m" in out
    assert redis_client.hget(keys.SCHEDULES, "acme/Lead") == "900"
    due = redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead")
    assert before <= due <= time.time()


def test_set_again_keeps_the_due_time_unless_the_new_interval_brings_it_sooner(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    far = time.time() + 86_400
    assert run(["schedule", "set", "acme", "Lead", "--every", "1d"], capsys)[0] == 0
    redis_client.zadd(keys.SCHEDULE_DUE, {"acme/Lead": far})
    assert run(["schedule", "set", "acme", "Lead", "--every", "2d"], capsys)[0] == 0
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == far  # longer: the next pull stays put
    assert redis_client.hget(keys.SCHEDULES, "acme/Lead") == "172800"
    assert run(["schedule", "set", "acme", "Lead", "--every", "5m"], capsys)[0] == 0
    due = redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead")
    assert due <= time.time() + 300  # shorter: no waiting out the old day-long slot


@pytest.mark.parametrize("argv", [
    ["acme", "Lead", "--every", "30s"],     # under the minimum
    ["acme", "Lead", "--every", "59s"],
    ["acme", "Lead", "--every", "0m"],
    ["acme", "Lead", "--every", "31d"],     # over the maximum
    ["acme", "Lead", "--every", "9999999d"],
    ["acme", "Lead", "--every", "15"],      # no unit
    ["acme", "Lead", "--every", "15min"],
    ["acme", "Lead", "--every", "1.5h"],
    ["acme", "Lead", "--every=-5m"],
    ["acme", "Lead", "--every", "1h30m"],
    ["acme", "Lead", "--every", ""],
    ["acme", "Lead", "--every", "\uff11\uff15m"],  # non-ASCII (fullwidth) digits
    ["Acme Corp", "Lead", "--every", "15m"],  # tenant outside the allowed characters
    ["a{b}", "Lead", "--every", "15m"],
    ["acme", "Lead; DELETE", "--every", "15m"],  # not a Salesforce API name
    ["acme", "1Lead", "--every", "15m"],
    ["acme", "Lead/Contact", "--every", "15m"],
])
def test_set_refuses_bad_input_with_one_line_and_writes_nothing(
    argv: list[str], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["schedule", "set", *argv], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("crmsync: error: invalid ")
    assert err.count("\n") == 1
    assert redis_client.keys("*") == []


def test_set_without_every_is_a_usage_error(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["schedule", "set", "acme", "Lead"], capsys)
    assert exited.value.code == 2
    assert redis_client.keys("*") == []


def test_remove(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    run(["schedule", "set", "acme", "Lead", "--every", "15m"], capsys)
    run(["schedule", "set", "acme", "Contact", "--every", "1h"], capsys)
    code, out, _ = run(["schedule", "remove", "acme", "Lead"], capsys)
    assert (code, out) == (0, "acme/Lead: schedule removed\n")
    assert redis_client.hgetall(keys.SCHEDULES) == {"acme/Contact": "3600"}
    assert redis_client.zrange(keys.SCHEDULE_DUE, 0, -1) == ["acme/Contact"]


def test_remove_unknown_schedule_fails(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["schedule", "remove", "acme", "Lead"], capsys)
    assert (code, out) == (1, "")
    assert err == "crmsync: error: no schedule for acme/Lead\n"


@pytest.mark.parametrize("argv", [["Acme", "Lead"], ["acme", "Lead__x__y__z"]])
def test_remove_refuses_bad_names(argv: list[str], redis_client: redis.Redis,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    redis_client.hset(keys.SCHEDULES, "acme/Lead", "900")
    code, _, err = run(["schedule", "remove", *argv], capsys)
    assert code == 2
    assert err.startswith("crmsync: error: invalid ")
    assert redis_client.hgetall(keys.SCHEDULES) == {"acme/Lead": "900"}


def test_list_empty(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schedule", "list"], capsys)
    assert code == 0
    assert out.startswith("no schedules")
    assert run(["schedule", "list", "--json"], capsys)[1] == "[]\n"


def test_list_shows_interval_due_active_pull_and_pause(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["schedule", "set", "acme", "Lead", "--every", "15m"], capsys)
    run(["schedule", "set", "acme", "Contact", "--every", "2h"], capsys)
    run(["schedule", "set", "globex", "Account", "--every", "1d"], capsys)
    job_id = enqueue_pull(redis_client, "acme", "Lead")
    PauseStore(redis_client).pause("globex", "quota_exhausted", "used 100000 of 100000")
    redis_client.hset(keys.SCHEDULES, "junk", "abc")  # hand-written garbage is listed, not fatal

    code, out, _ = run(["schedule", "list", "--json"], capsys)
    assert code == 0
    rows = {f"{r['tenant']}/{r['object']}": r for r in json.loads(out)}
    assert set(rows) == {"acme/Contact", "acme/Lead", "globex/Account", "junk/"}
    lead = rows["acme/Lead"]
    assert (lead["every"], lead["interval_s"], lead["active_pull"], lead["paused"]) == ("15m", 900, job_id, False)
    assert lead["next_due_epoch"] == redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead")
    assert lead["next_due"].endswith("+00:00")
    assert rows["acme/Contact"]["active_pull"] is None
    account = rows["globex/Account"]
    assert (account["every"], account["paused"], account["pause_reason"]) == ("1d", True, "quota_exhausted")
    assert rows["junk/"]["error"]
    assert rows["junk/"]["interval_s"] is None

    code, out, _ = run(["schedule", "list"], capsys)
    assert code == 0
    lines = {line.split()[0] + "/" + line.split()[1]: line for line in out.splitlines()[1:] if "junk" not in line}
    assert job_id in lines["acme/Lead"]
    assert lines["acme/Lead"].endswith(" no")
    assert " 2h " in lines["acme/Contact"]
    assert lines["globex/Account"].endswith("yes (quota_exhausted)")
    assert "INVALID" in next(line for line in out.splitlines() if line.startswith("junk"))


def test_redis_down_is_a_one_line_failure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    code, out, err = run(["schedule", "list"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("crmsync: error: schedules unavailable: ConnectionError")


@pytest.mark.parametrize("priority", ["urgent", "Essential", "", "low"])
def test_set_refuses_a_bad_priority_and_writes_nothing(
    priority: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["schedule", "set", "acme", "Lead", "--every", "15m", "--priority", priority], capsys)
    assert (code, out) == (2, "")
    assert err == f"crmsync: error: invalid priority {priority!r}: use one of essential, normal\n"
    assert redis_client.keys("*") == []


def test_priority_is_stored_kept_listed_and_removed(redis_client: redis.Redis,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schedule", "set", "acme", "Lead", "--every", "15m", "--priority", "essential"], capsys)
    assert code == 0
    assert out.startswith("acme/Lead: pull every 15m (essential), next due ")
    run(["schedule", "set", "acme", "Contact", "--every", "1h"], capsys)
    # Changing the interval alone keeps the priority.
    assert "(essential)" in run(["schedule", "set", "acme", "Lead", "--every", "5m"], capsys)[1]
    assert redis_client.hgetall(keys.SCHEDULE_PRIORITY) == {"acme/Lead": "essential"}
    PauseStore(redis_client).pause("acme", "quota_exhausted", "only the reserve is left")
    PauseStore(redis_client).narrow("acme", "quota_exhausted")

    rows = {r["object"]: r for r in json.loads(run(["schedule", "list", "--json"], capsys)[1])}
    assert (rows["Lead"]["priority"], rows["Lead"]["paused"]) == ("essential", False)  # it goes on with the reserve
    assert (rows["Contact"]["priority"], rows["Contact"]["paused"]) == ("normal", True)
    lines = {line.split()[1]: line for line in run(["schedule", "list"], capsys)[1].splitlines()[1:]}
    assert " essential " in lines["Lead"]
    assert " normal " in lines["Contact"]

    run(["schedule", "set", "acme", "Lead", "--every", "5m", "--priority", "normal"], capsys)
    assert redis_client.hget(keys.SCHEDULE_PRIORITY, "acme/Lead") == "normal"
    run(["schedule", "remove", "acme", "Lead"], capsys)
    assert redis_client.hgetall(keys.SCHEDULE_PRIORITY) == {}


def test_a_priority_written_by_hand_makes_its_entry_invalid(redis_client: redis.Redis,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run(["schedule", "set", "acme", "Lead", "--every", "15m"], capsys)
    redis_client.hset(keys.SCHEDULE_PRIORITY, "acme/Lead", "urgent")
    [row] = json.loads(run(["schedule", "list", "--json"], capsys)[1])
    assert row["error"] == "invalid priority 'urgent': use one of essential, normal"
    assert row["interval_s"] is None
