"""`make run` headless: the demo tenant pauses, resumes after a limit raise, and nothing is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_until
from worker.jobs.parking import PauseStore


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


def start_run(tmp_path: Path) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """`crmsync run` headless on its own Redis, every process it starts marked by an environment variable."""
    name, value = "CRMSYNC_RUN_TEST", uuid.uuid4().hex
    # Without the tests' secret directories and login hosts: `make run` allows its demo's own.
    unset = ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "CRMSYNC_SECRET_DIRS", "CRMSYNC_LOGIN_HOSTS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env[name] = value
    run = subprocess.Popen([CRMSYNC, "run", "--headless", "--metrics-port", "0", "--var-dir", str(tmp_path / "var")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return run, f"{name}={value}", env


@pytest.mark.slow
def test_make_run_pauses_resumes_and_stops_cleanly(tmp_path: Path) -> None:
    run, marker, env = start_run(tmp_path)
    try:
        assert run.stdout is not None
        first = run.stdout.readline()
        assert first.startswith("Redis: redis://127.0.0.1:"), first
        url = first.split()[1]
        client = redis.Redis.from_url(url)
        pauses = PauseStore(client)
        wait_until(lambda: pauses.get("globex") is not None and pauses.parked_count("globex") > 0, 120,
                   "globex to pause")
        pause = pauses.get("globex")
        assert pause is not None
        assert pause.reason == "quota_exhausted"
        assert pauses.get("acme") is None

        raised = subprocess.run([CRMSYNC, "quota", "set", "globex", "150000"], env={**env, "REDIS_URL": url},
                                capture_output=True, text=True, timeout=60, check=False)
        assert raised.returncode == 0, raised.stderr
        wait_until(lambda: pauses.get("globex") is None and pauses.parked_count("globex") == 0, 60,
                   "globex to resume")
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, out
    assert "stopped: no process left running" in out
    assert "globex: used" in out
    assert processes_with(marker) == []
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


@pytest.mark.slow
def test_make_run_killed_with_sigkill_leaves_nothing_running(tmp_path: Path) -> None:
    run, marker, _ = start_run(tmp_path)
    try:
        assert run.stdout is not None
        for line in run.stdout:
            if line.startswith("---"):  # the first status lines: everything has started
                break
        # run, Redis, emulator, worker pool, scheduler, metrics: the status line can come before the last of them
        # is visible (a process still exec'ing has no readable environ), so wait for them rather than count once
        wait_until(lambda: len(processes_with(marker)) >= 5, 60, "every process of the stack to start")
    finally:
        run.kill()  # SIGKILL: `crmsync run` gets no chance to clean up
        run.wait()
    wait_until(lambda: processes_with(marker) == [], 60, "every child to exit with its parent")
