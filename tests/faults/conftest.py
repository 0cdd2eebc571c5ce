"""Fault and load fixtures: Redis servers we can stop, worker pools we can kill, tenants on emulator orgs.

Everything is real: ``redis-server`` processes, ``crmsync worker`` process pools (Dramatiq forks the worker
processes under them), and the Salesforce emulator over HTTPS (in-process, so its request counts are exact).
Nothing here waits for time to pass: every wait polls a condition under a deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from emulator import EmulatorServer, OrgInfo
from quota import CreditBucket
from tests.conftest import wait_until
from worker.broker import NAMESPACE
from worker.devstack.processes import stop_group
from worker.devstack.redis_server import EmbeddedRedis
from worker.jobs.state import JobRecord, JobStore
from worker.salesforce.connections import ConnectionStore

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
_names = itertools.count(1)


class RedisServer(EmbeddedRedis):
    """A redis-server on a loopback port kept across restarts, that can be stopped, restarted, frozen and thawed.

    It keeps an append-only file fsynced on every write, so a stop and a restart lose nothing.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, config={"appendonly": "yes", "appendfsync": "always"})
        self.dir = directory

    def client(self, **options: Any) -> redis.Redis:
        """A client of the running server; ``options`` go to ``redis.Redis``."""
        return redis.Redis.from_url(self.url, **options)


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields after the last ')' are fixed.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def worker_environment(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMSYNC_", "PROMETHEUS_"))}
    # Where the tests' secrets live and the emulator's host, as tests/conftest.py sets them for every process.
    env.update({name: os.environ[name] for name in ("CRMSYNC_SECRET_DIRS", "CRMSYNC_LOGIN_HOSTS")})
    env.update({
        "REDIS_URL": redis_url,
        "CRMSYNC_DATA_DIR": str(data_dir),
        "CRMSYNC_LOG_FORMAT": "json",
        "CRMSYNC_RETRY_INITIAL_WAIT": "0.01",
        "CRMSYNC_RETRY_MAX_WAIT": "0.05",
        "CRMSYNC_ORG_PROBE_SECONDS": "1",
        "CRMSYNC_BULK_POLL_SECONDS": "0.01",
        "PROMETHEUS_MULTIPROC_DIR": str(data_dir.parent / f"metrics-{next(_names)}"),
    })
    env.update(extra)
    return env


@dataclass
class Pool:
    """One ``crmsync worker`` process and the Dramatiq worker processes it forks."""

    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    processes: int

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def workers(self) -> list[int]:
        """The Dramatiq worker processes (children of the main process, not its log and fork helpers)."""
        return children(self.process.pid)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every worker process has started its consumers."""
        wait_until(lambda: self.log_text().count("Worker process is ready for action.") >= self.processes
                   or _fail_if_dead(self), timeout, "the worker pool to start")

    def all_alive(self) -> bool:
        return self.process.poll() is None and all(alive(pid) for pid in children(self.process.pid))

    def stop(self) -> None:
        stop_group(self.process, timeout=60)


def _fail_if_dead(pool: Pool) -> bool:
    if pool.process.poll() is not None:
        pytest.fail(f"worker pool exited with {pool.process.returncode}: {pool.log_text()[-3000:]}")
    return False


@pytest.fixture
def start_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Pool]]:
    """Start ``crmsync worker`` pools; every pool started is stopped at the end of the test."""
    pools: list[Pool] = []

    def start(env: dict[str, str], processes: int = 2, threads: int = 2, wait: bool = True) -> Pool:
        log_path = tmp_path_factory.mktemp("pool") / "worker.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [CRMSYNC, "worker", "--processes", str(processes), "--threads", str(threads)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        pool = Pool(process, log_path, Path(env["CRMSYNC_DATA_DIR"]), processes)
        pools.append(pool)
        if wait:
            pool.wait_ready()
        return pool

    yield start
    for pool in pools:
        pool.stop()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(orgs=[]) as server:
        yield server


@dataclass
class Tenant:
    """A tenant connected to its own emulator org, with a limit set."""

    name: str
    org: OrgInfo
    client: redis.Redis
    emulator: EmulatorServer
    token_requests: int = field(default=0)

    @property
    def bucket(self) -> CreditBucket:
        return CreditBucket(self.client)

    def counted(self) -> int:
        """Every request the emulator counted for the org (its counts cover all, its log only the latest)."""
        counts = self.emulator.control.request_counts(self.org.name)
        return sum(n for what, n in counts.items() if what.split(" ", 1)[1].startswith("/services/data/v"))

    def used(self) -> int:
        return self.bucket.status(self.name).used

    def job(self, job_id: str) -> JobRecord:
        record = JobStore(self.client).get(self.name, job_id)
        assert record is not None, job_id
        return record


def connect_tenant(emulator: EmulatorServer, client: redis.Redis, secrets_dir: Path, *, records: int = 20,
                   limit: int | None = 100_000, prefix: str = "f") -> Tenant:
    """A fresh tenant on a fresh org; ``limit=None`` leaves the limit unset."""
    name = f"{prefix}{next(_names)}-{os.getpid()}"
    org = emulator.control.add_org(f"org-{name}", records=records)
    secret = secrets_dir / f"{name}.secret"
    secret.write_text(org.client_secret)
    ConnectionStore(client).connect(
        name, environment="production", login_url=emulator.base_url, client_id=org.client_id,
        client_secret_file=str(secret), ca_bundle=emulator.ca_bundle,
    )
    if limit is not None:
        CreditBucket(client).set_limit(name, limit, actor="faults")
    return Tenant(name, org, client, emulator)


def enqueue_elsewhere(redis_url: str, jobs: list[dict[str, Any]]) -> list[str]:
    """Queue jobs on another Redis than this process's broker, through ``worker.enqueue`` in a subprocess
    (a process's broker is built on ``REDIS_URL`` once, at its first enqueue). Each job: ``{"kind": "pull"|"push",
    ...}``."""
    script = (
        "import json, sys, redis\n"
        "from worker.enqueue import enqueue_pull, enqueue_push\n"
        "client = redis.Redis.from_url(sys.argv[1])\n"
        "ids = []\n"
        "for job in json.load(sys.stdin):\n"
        "    if job['kind'] == 'pull':\n"
        "        ids.append(enqueue_pull(client, job['tenant'], job['sobject']))\n"
        "    else:\n"
        "        ids.append(enqueue_push(client, job['tenant'], job['sobject'], job['records'], 'External_Id__c'))\n"
        "print(json.dumps(ids))\n"
    )
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, "-c", script, redis_url], input=json.dumps(jobs), capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    ids: list[str] = json.loads(done.stdout)
    return ids


def crmsync(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRMSYNC, *args], capture_output=True, text=True, env=env, input=stdin, timeout=120,
                          check=False)


@pytest.fixture
def secrets_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="crmsync-faults-") as directory:
        yield Path(directory)


def broker_idle(client: redis.Redis) -> bool:
    """No message queued, delayed or being processed (unacked) anywhere in the broker."""
    queued = sum(int(client.llen(f"{NAMESPACE}:{q}")) for q in ("crmsync", "crmsync.DQ"))  # type: ignore[arg-type]
    unacked = sum(int(client.scard(k)) for k in client.scan_iter(f"{NAMESPACE}:__acks__.*")  # type: ignore[arg-type]
                  if k.endswith((b".crmsync", b".crmsync.DQ")))
    return queued == 0 and unacked == 0
