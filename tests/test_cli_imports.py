"""``crmsync --help`` and ``crmsync quota show`` import none of the heavy packages other commands need.

Each runs in a fresh interpreter under ``-X importtime``, whose report on stderr names every module imported.
What is checked is which modules load, never how long they take.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

HEAVY = frozenset({"dramatiq", "simple_salesforce", "emulator", "rich", "requests", "structlog",
                   "prometheus_client"})


def imported_packages(redis_url: str, *args: str) -> set[str]:
    """The top-level packages ``crmsync ARGS`` imports; fails the test if the command fails."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "worker.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "REDIS_URL": redis_url}, timeout=60, check=False)
    report = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if line not in report)
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in report}


@pytest.mark.parametrize("args", [["--help"], ["quota", "show", "acme"]], ids=["help", "quota-show"])
def test_quick_commands_import_no_heavy_package(redis_url: str, redis_client: redis.Redis, args: list[str]) -> None:
    packages = imported_packages(redis_url, *args)
    assert "worker" in packages  # the report was read
    assert packages.isdisjoint(HEAVY), sorted(packages & HEAVY)


def test_a_command_imports_its_own_implementation(redis_url: str) -> None:
    assert "rich" in imported_packages(redis_url, "run", "--help")


def test_a_command_that_loads_the_worker_metrics_prepares_their_directory(redis_url: str, redis_client: redis.Redis,
                                                                          tmp_path: Path) -> None:
    # `notify show` imports the notification counters; in multiprocess mode they need the directory to exist.
    directory = tmp_path / "not" / "yet" / "there"
    done = subprocess.run([sys.executable, "-m", "worker.cli", "notify", "show"], capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert directory.is_dir()
