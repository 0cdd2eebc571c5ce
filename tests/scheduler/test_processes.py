"""Two real scheduler processes: ticking at the same moments they never queue a pull twice; a killed or
stopped leader is replaced; SIGTERM and SIGINT release the lease and exit cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from tests.scheduler.helpers import MEMBERS, finish_all_jobs, pulls_by_member, queued_messages, schedule_all
from tests.scheduler.procs import CLOCK, DONE, READY, go_key
from worker import keys
from worker.scheduling.schedules import ScheduleStore

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy; the processes run on wall time, the assertions do not."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting for the scheduler processes"
        time.sleep(0.02)
    return value


@pytest.fixture
def spawn(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"proc{len(started)}.log").open("wb")
        env = {**os.environ, "REDIS_URL": redis_url, "CRMSYNC_LOG_FORMAT": "json"}
        proc = subprocess.Popen([sys.executable, "-m", "tests.scheduler.procs", *args], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def log_of(tmp_path: Path, index: int) -> str:
    return (tmp_path / f"proc{index}.log").read_text(errors="replace")


@pytest.mark.slow
def test_two_processes_ticking_together_never_double_enqueue_and_fail_over(
    redis_client: redis.Redis, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    clock = FakeClock()
    schedule_all(redis_client, clock)
    procs = {name: spawn("lockstep", name) for name in ("a", "b")}
    for _ in procs:
        assert redis_client.blpop([READY], timeout=60) is not None

    rounds = 30
    mid_round_losses = set(range(2, rounds, 5))
    pre_round_losses = set(range(1, rounds, 3)) - mid_round_losses
    reports: list[list[dict[str, Any]]] = []
    for r in range(rounds):
        redis_client.set(CLOCK, repr(clock()))
        if r in pre_round_losses:
            redis_client.delete(keys.SCHEDULER_LEASE)
        for name in (("a", "b") if r % 2 else ("b", "a")):
            redis_client.rpush(go_key(name), r)
        if r in mid_round_losses:
            redis_client.delete(keys.SCHEDULER_LEASE)
        got = [redis_client.blpop([DONE], timeout=60) for _ in procs]
        assert None not in got
        reports.append([json.loads(item[1]) for item in got if item is not None])
        finish_all_jobs(redis_client)
        clock.advance(60)

    for r, pair in enumerate(reports):
        assert {p["round"] for p in pair} == {r}
        claims = Counter(m for p in pair for m in p["claimed"])
        assert max(claims.values(), default=0) <= 1, f"round {r}: {claims}"
        if r not in mid_round_losses:
            assert sum(p["leader"] for p in pair) == 1
    enqueued = [job for pair in reports for p in pair for job in p["enqueued"].values()]
    assert sorted(m["kwargs"]["job_id"] for m in queued_messages(redis_client)) == sorted(enqueued)
    per_member = pulls_by_member(redis_client)
    assert set(per_member) == set(MEMBERS)
    assert all(rounds - len(mid_round_losses) <= n <= rounds for n in per_member.values()), per_member

    # The leader dies without a word; once its lease runs out the other queues everything due.
    leader = redis_client.get(keys.SCHEDULER_LEASE)
    assert leader in procs
    survivor = "b" if leader == "a" else "a"
    procs[leader].kill()
    procs[leader].wait(timeout=30)
    redis_client.delete(keys.SCHEDULER_LEASE)  # what expiry does, without waiting for it
    redis_client.set(CLOCK, repr(clock()))
    redis_client.rpush(go_key(survivor), rounds)
    item = redis_client.blpop([DONE], timeout=60)
    assert item is not None
    last = json.loads(item[1])
    assert last["leader"]
    assert sorted(last["enqueued"]) == sorted(MEMBERS)
    assert redis_client.get(keys.SCHEDULER_LEASE) == survivor
    assert sum(pulls_by_member(redis_client).values()) == len(enqueued) + len(MEMBERS)
    redis_client.rpush(go_key(survivor), "stop")
    assert procs[survivor].wait(timeout=30) == 0


@pytest.mark.slow
def test_a_scheduler_killed_mid_batch_loses_no_entry(
    redis_client: redis.Redis, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """SIGKILL after claiming its second batch of 4 (before sending it): the first batch is queued, the second
    held for a lease TTL, the third untouched; another process queues the third, then the second when the hold
    ends, each once."""
    clock = FakeClock()
    schedule_all(redis_client, clock)
    doomed = spawn("doomed", "a")
    assert redis_client.blpop([READY], timeout=60) is not None
    redis_client.set(CLOCK, repr(clock()))
    redis_client.rpush(go_key("a"), 0)
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    queued = set(pulls_by_member(redis_client))
    untouched = {m for m in MEMBERS if redis_client.zscore(keys.SCHEDULE_DUE, m) == clock()}
    held = set(MEMBERS) - queued - untouched  # claimed, never sent: held a lease TTL (60 s) ahead
    assert len(queued) == len(held) == len(untouched) == 4
    assert all(redis_client.zscore(keys.SCHEDULE_DUE, m) == clock() + 60 for m in held)

    survivor = spawn("lockstep", "b")
    assert redis_client.blpop([READY], timeout=60) is not None
    redis_client.delete(keys.SCHEDULER_LEASE)  # the dead one's lease runs out
    for round_, moved in enumerate((0, 60)):
        redis_client.set(CLOCK, repr(clock() + moved))
        redis_client.rpush(go_key("b"), round_)
        item = redis_client.blpop([DONE], timeout=60)
        assert item is not None
        assert set(json.loads(item[1])["enqueued"]) == (untouched if moved == 0 else held)
    assert pulls_by_member(redis_client) == dict.fromkeys(MEMBERS, 1)
    redis_client.rpush(go_key("b"), "stop")
    assert survivor.wait(timeout=30) == 0


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_scheduler_command_hands_over_on_a_stop_signal(
    redis_client: redis.Redis, spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path,
    stop_signal: signal.Signals,
) -> None:
    start = time.time()
    ScheduleStore(redis_client).set("acme", "Lead", 3600)  # the real clock, as `crmsync schedule set` uses: due now
    first = spawn("cli", "scheduler", "--tick", "0.05", "--lease-ttl", "30", "--instance-id", "p1")
    wait_until(lambda: redis_client.get(keys.SCHEDULER_LEASE) == "p1")
    wait_until(lambda: pulls_by_member(redis_client) == {"acme/Lead": 1})
    second = spawn("cli", "scheduler", "--tick", "0.05", "--lease-ttl", "30", "--instance-id", "p2")
    wait_until(lambda: "scheduler.started" in log_of(tmp_path, 1))

    first.send_signal(stop_signal)
    assert first.wait(timeout=30) == 0
    # Released on the way out: the standby takes over on its next tick, not after the 30 s lease.
    wait_until(lambda: redis_client.get(keys.SCHEDULER_LEASE) == "p2", timeout=10)
    events = [json.loads(line)["event"] for line in log_of(tmp_path, 0).splitlines() if line.startswith("{")]
    assert events[-2:] == ["scheduler.lease_released", "scheduler.stopped"]

    second.send_signal(stop_signal)
    assert second.wait(timeout=30) == 0
    assert redis_client.get(keys.SCHEDULER_LEASE) is None
    assert pulls_by_member(redis_client) == {"acme/Lead": 1}  # due again only in an hour
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") >= start + 3600
