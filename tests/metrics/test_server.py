"""The whole /metrics endpoint: naming conventions, ``promtool check metrics``, and ``crmsync metrics`` itself."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests

from quota import CreditBucket
from tests.conftest import FakeClock
from tests.metrics.budgets import limits, store_budgets
from tests.metrics.conftest import ROOT, Serve, families, http_scrape, run_proc, value
from worker import keys
from worker.cli.metrics import register
from worker.jobs.parking import PauseStore
from worker.metrics.collector import TENANT_GAUGES
from worker.metrics.server import build_registry

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def full_scrape(redis_client: redis.Redis, clock: FakeClock, prom_dir: Path, serve_registry: Serve) -> str:
    """A live scrape with every family present: tenant state in Redis and two worker-like processes."""
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test")
    bucket.take("acme", 5)
    PauseStore(redis_client, clock=clock).pause("acme", "quota_exhausted", "used up")
    redis_client.hset(keys.org_usage("acme"), mapping={"used": 10, "max": 100, "at": clock()})
    store_budgets(redis_client, "acme", limits(), at=clock())
    run_proc(prom_dir, "all", 2)
    run_proc(prom_dir, "dramatiq", 2)
    return http_scrape(serve_registry(build_registry(redis_client, prom_dir, clock=clock)))


def test_every_family_follows_the_naming_conventions(full_scrape: str) -> None:
    parsed = families(full_scrape)
    expected = {*TENANT_GAUGES, "crmsync_api_requests", "crmsync_api_request_duration_seconds",
                "crmsync_credits_charged", "crmsync_credits_refunded", "crmsync_jobs", "crmsync_notifications",
                "crmsync_dramatiq_messages", "crmsync_dramatiq_message_duration_seconds"}
    assert expected <= set(parsed)  # every family is really in the scrape, so the checks below see it
    for name, family in parsed.items():
        assert name.startswith("crmsync_"), name
        assert "milliseconds" not in name, name  # base units
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
            assert any(s.name == f"{name}_total" for s in family.samples), name
        has_tenant = any("tenant" in s.labels for s in family.samples)
        assert has_tenant == (name in TENANT_GAUGES), name
        assert not any("pid" in s.labels for s in family.samples), name
    assert all(parsed[name].type == "gauge" for name in TENANT_GAUGES)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (CI: apt-get install -y prometheus)")
def test_promtool_accepts_a_live_scrape(full_scrape: str) -> None:
    assert PROMTOOL is not None
    bad = subprocess.run([PROMTOOL, "check", "metrics"], input="# TYPE bad counter\nbad 1\n", text=True,
                         capture_output=True, timeout=60, check=False)
    assert bad.returncode != 0  # the checker really checks: a counter without _total is refused
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=full_scrape, text=True, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip()  # no lint warnings either


def test_crmsync_metrics_command_serves_and_stops_on_sigterm(redis_client: redis.Redis, redis_url: str,
                                                              prom_dir: Path) -> None:
    CreditBucket(redis_client).set_limit("acme", 123_456, actor="test")
    run_proc(prom_dir, "requests", 2)
    env = {**os.environ, "REDIS_URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    process = subprocess.Popen([sys.executable, "-m", "worker.cli.metrics", "--port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line + (process.stderr.read() if process.stderr else "")
        url = line.split()[1]
        text = requests.get(url, timeout=10).text
        assert value(text, "crmsync_quota_limit", tenant="acme") == 123_456
        assert value(text, "crmsync_credits_charged_total") == 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_crmsync_metrics_without_tenants_or_worker_dir(redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "worker.cli.metrics", "--port", "0", "--no-tenants"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "tenant gauges off" in line, line
        assert "no worker metrics" in line, line
        text = requests.get(line.split()[1], timeout=10).text
        assert "crmsync_tenant_scrape_success" not in text
        assert text.strip() == ""
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_register_adds_the_metrics_command_with_its_defaults() -> None:
    parser = argparse.ArgumentParser(prog="crmsync")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["metrics"])
    assert (args.host, args.port, args.multiproc_dir, args.no_tenants) == ("127.0.0.1", 9464, None, False)
    assert callable(args.handler)
    args = parser.parse_args(["metrics", "--port", "0", "--host", "::1", "--multiproc-dir", "/x"])
    assert (args.host, args.port, args.multiproc_dir) == ("::1", 0, Path("/x"))
