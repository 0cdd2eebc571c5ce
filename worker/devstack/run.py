"""``crmsync run``: the whole system on embedded defaults (``make run``), with a live view.

With ``REDIS_URL`` unset it starts its own Redis on a free loopback port. When no tenant has a connection it
runs the demo: the Salesforce emulator with two orgs, tenants ``acme`` (a full daily budget) and ``globex``
(a few credits left, so its pause shows within a minute), pulls of every object every minute. Then it starts
the workers, the scheduler and the metrics endpoint, and shows the live view until Ctrl-C, when it stops every
process it started. Pointed at a real ``REDIS_URL`` with real connections, it runs the real thing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import cast
from urllib.parse import urlsplit

import redis
from rich.console import Console
from rich.live import Live

from quota.bucket import CreditBucket
from quota.connection import connect_checked
from worker.devstack.liveview import BurnRates, Snapshot, plain_lines, render
from worker.devstack.processes import ProcessStack
from worker.devstack.redis_server import redis_url_or_embedded
from worker.errors import StartFailed
from worker.salesforce.connections import ConnectionStore
from worker.scheduling.schedules import ScheduleStore
from worker.settings import DEFAULT_SECRET_DIRS, SecretSettings

__all__ = ["DEMO_TENANTS", "run"]

DEMO_TENANTS = {"acme": 0, "globex": 8}  # tenant -> credits left (0: the whole daily limit)
DEMO_LIMIT = 100_000
DEMO_RECORDS = 3_000
DEMO_OBJECTS = ("Lead", "Contact", "Account", "Opportunity", "Campaign", "Case")


def _setup_demo(stack: ProcessStack, client: redis.Redis, run_dir: Path) -> None:
    ready_file = run_dir / "emulator.json"
    ready_file.unlink(missing_ok=True)
    stack.start("emulator", "emulator", "--orgs", ",".join(DEMO_TENANTS), "--records", str(DEMO_RECORDS),
                "--ready-file", str(ready_file))
    ready = stack.wait_for_file("emulator", ready_file)
    secrets_dir = run_dir / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    _allow_demo_secrets(stack.env, secrets_dir, ready["base_url"])
    connections = ConnectionStore(client, secrets=SecretSettings.from_env(stack.env))
    bucket, schedules = CreditBucket(client), ScheduleStore(client)
    for tenant, left in DEMO_TENANTS.items():
        org = ready["orgs"][tenant]
        secret = secrets_dir / f"{tenant}.secret"
        secret.write_text(org["client_secret"])
        secret.chmod(0o600)
        connections.connect(tenant, environment=org["environment"], login_url=ready["base_url"],
                            client_id=org["client_id"], client_secret_file=str(secret), ca_bundle=ready["ca_bundle"])
        if bucket.status(tenant).limit_state == "unset":
            bucket.set_limit(tenant, DEMO_LIMIT, actor="crmsync run (demo)")
            if left:
                bucket.take(tenant, DEMO_LIMIT - left)
        for sobject in DEMO_OBJECTS:
            schedules.set(tenant, sobject, 60)


def _allow_demo_secrets(env: dict[str, str], secrets_dir: Path, emulator_url: str) -> None:
    """Add the demo's secret directory and the emulator's host:port to what ``env`` allows, keeping what it
    already allows (the processes started with it also serve any real tenants)."""
    dirs = env.get("CRMSYNC_SECRET_DIRS") or DEFAULT_SECRET_DIRS
    env["CRMSYNC_SECRET_DIRS"] = f"{dirs}:{secrets_dir}"
    hosts = env.get("CRMSYNC_LOGIN_HOSTS")
    emulator = urlsplit(emulator_url).netloc
    env["CRMSYNC_LOGIN_HOSTS"] = f"{hosts},{emulator}" if hosts else emulator


def _instructions(url: str, metrics_url: str, demo: bool) -> str:
    lines = [f"Redis: {url}", f"Metrics: {metrics_url}", "Logs: var/log/*.log   Ctrl-C stops everything."]
    if demo:
        lines.append("In a second terminal, raise globex's limit and watch it resume:")
        lines.append(f"  REDIS_URL={url} .venv/bin/crmsync quota set globex 150000")
    return "\n".join(lines)


def _view(client: redis.Redis, stack: ProcessStack, *, headless: bool, duration: float | None) -> None:
    rates = BurnRates()
    deadline = None if duration is None else time.monotonic() + duration
    console = Console()
    live = None if headless else Live(console=console, refresh_per_second=4, screen=False)
    if live is not None:
        live.start()
    try:
        while deadline is None or time.monotonic() < deadline:
            snapshot = Snapshot.read(client, rates)
            if live is not None:
                live.update(render(snapshot))
            else:
                print(f"--- {time.strftime('%H:%M:%S')}", *plain_lines(snapshot), sep="\n", flush=True)
            dead = stack.dead()
            if dead:
                raise StartFailed(f"{', '.join(dead)} stopped unexpectedly: see var/log")
            time.sleep(1.0)  # the view's refresh period
    finally:
        if live is not None:
            live.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Run ``crmsync run`` with its parsed options (see ``worker.cli.run``) and return the exit code."""
    signal.signal(signal.SIGTERM, _interrupt)
    var = Path(args.var_dir).resolve()
    run_dir, log_dir = var / "run", var / "log"
    run_dir.mkdir(parents=True, exist_ok=True)
    with redis_url_or_embedded() as url:
        env = {**os.environ, "REDIS_URL": url, "CRMSYNC_DATA_DIR": str(var / "data"),
               "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"), "CRMSYNC_LOG_FORMAT": "json"}
        (run_dir / "redis-url").write_text(url + "\n")
        client = cast(redis.Redis, connect_checked(url))  # a RedisCluster serves the same one-slot commands
        stack = ProcessStack(env, log_dir)
        try:
            demo = args.demo or not ConnectionStore(client).all()
            if demo:
                _setup_demo(stack, client, run_dir)
            stack.start("worker", "worker", "--processes", str(args.processes), "--threads", str(args.threads))
            stack.start("scheduler", "scheduler", "--tick", "1")
            stack.start("metrics", "metrics", "--host", "127.0.0.1", "--port", str(args.metrics_port))
            metrics_url = stack.wait_for_line("metrics", "serving").split()[1]
            (run_dir / "pids.json").write_text(json.dumps({c.name: c.process.pid for c in stack.children}))
            print(_instructions(url, metrics_url, demo), flush=True)
            _view(client, stack, headless=args.headless or not sys.stdout.isatty(), duration=args.duration)
        except KeyboardInterrupt:
            print("stopping...", flush=True)
        except StartFailed as exc:
            print(f"crmsync run: {exc}", file=sys.stderr)
            return 1
        finally:
            stack.stop()
            client.close()
    print("stopped: no process left running", flush=True)
    return 0
