"""What the worker benchmarks share: one Redis per run, the emulator in-process, tenants, real worker pools.

Redis: ``REDIS_URL`` when it is set, else one embedded server started on first use and stopped when the
process exits. It is one server for every worker benchmark of a run because this process's broker is built on
``REDIS_URL`` at its first enqueue, once per process: a second embedded server would leave the broker on the
first. ``os.environ["REDIS_URL"]`` is set before the first enqueue, and worker processes inherit it.

The emulator runs in this process (``EmulatorServer``), so its request log's ``time`` and this process's
``time.time()`` are one clock. Workers are real ``crmsync worker`` (``dramatiq``) process pools. Tenants' secrets
are files in the scratch directory and the emulator is on loopback: the stack's environment allows exactly
those (``CRMSYNC_SECRET_DIRS``, ``CRMSYNC_LOGIN_HOSTS``), for its connects and its worker pools alike.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from emulator import EmulatorServer, OrgInfo
from quota import CreditBucket
from worker import keys
from worker.devstack.processes import stop_group
from worker.devstack.redis_server import redis_url_or_embedded
from worker.jobs.state import JobStore
from worker.metrics.multiprocess import prepare_multiproc_dir
from worker.salesforce.connections import ConnectionStore
from worker.settings import SecretSettings

__all__ = ["BenchTenant", "Stack", "WorkerPool", "shared_redis_url", "worker_stack"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_exit_stack = contextlib.ExitStack()
_shared_url: str | None = None


def shared_redis_url() -> str:
    """The Redis of this benchmark run: ``REDIS_URL``, or an embedded server kept until the process exits."""
    global _shared_url  # noqa: PLW0603 (one server per benchmark process, see the module docstring)
    if _shared_url is None:
        _shared_url = _exit_stack.enter_context(redis_url_or_embedded())
        atexit.register(_exit_stack.close)
        os.environ["REDIS_URL"] = _shared_url
    return _shared_url


@dataclass
class BenchTenant:
    """A tenant connected to its own emulator org, with a limit set."""

    name: str
    org: OrgInfo
    stack: Stack

    def counted_requests(self) -> int:
        """Requests the emulator counted for this tenant's org (every request, not only the logged tail)."""
        return self.stack.emulator.control.usage(self.org.name)["used"]

    def used_credits(self) -> int:
        """Credits used in the tenant's current bucket window."""
        return self.stack.bucket.status(self.name).used


@dataclass
class WorkerPool:
    """A running ``dramatiq`` pool (as ``crmsync worker`` starts it), in its own process group."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """SIGTERM the pool's process group; SIGKILL it if it has not stopped after 60 s."""
        stop_group(self.process, timeout=60)

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process of the pool (its process group), from Linux ``/proc``."""
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended while we looked
            if int(fields[2]) == self.process.pid:  # fields[2] is the process group
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def check_alive(self) -> None:
        """Raise with the log's tail if the pool has exited."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the worker pool exited ({self.process.returncode}): {tail}")


@dataclass
class Stack:
    """Redis, the emulator, a scratch directory and the environment worker processes get."""

    url: str
    client: redis.Redis
    emulator: EmulatorServer
    scratch: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bucket(self) -> CreditBucket:
        """The credit bucket on the benchmark's Redis."""
        return CreditBucket(self.client)

    def tenant(self, name: str, *, records: int = 5, limit: int = 1_000_000, reset_at: str | None = None,
               latency: float = 0.0) -> BenchTenant:
        """Connect ``name`` to a new emulator org seeded with ``records`` records per object, and set its limit.

        ``reset_at`` is set with the limit in one change, before the tenant's first take, so it applies to
        the very first window (a later change would wait for the open window to end).
        """
        org = self.emulator.control.add_org(f"org-{name}", records=records)
        if latency:
            self.emulator.control.set_faults(org.name, latency=latency)
        secret = self.scratch / f"{name}.secret"
        secret.write_text(org.client_secret)
        ConnectionStore(self.client, secrets=SecretSettings.from_env(self.env)).connect(
            name, environment="production", login_url=self.emulator.base_url, client_id=org.client_id,
            client_secret_file=str(secret), ca_bundle=self.emulator.ca_bundle,
        )
        if reset_at is None:
            self.bucket.set_limit(name, limit, actor="bench")
        else:
            self.bucket.set_limit(name, limit, actor="bench", reset_at=reset_at)
        return BenchTenant(name, org, self)

    @contextlib.contextmanager
    def workers(self, app: str = "worker.app", *, processes: int = 2, threads: int = 4,
                extra_env: dict[str, str] | None = None) -> Iterator[WorkerPool]:
        """Run ``python -m dramatiq APP`` the way ``crmsync worker`` does, until the block ends.

        With the default app this is exactly ``crmsync worker --processes N --threads T``. The metrics
        directory is emptied first, as ``crmsync worker`` does before it execs Dramatiq.
        """
        env = {**self.env, **(extra_env or {})}
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=self.scratch))
        prepare_multiproc_dir(metrics_dir, environ=env, clean=False)  # a fresh, empty directory
        log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log", dir=self.scratch)[1])
        if app == "worker.app":
            command = [str(Path(sys.executable).with_name("crmsync")), "worker"]
        else:
            command = [sys.executable, "-m", "dramatiq", app]
        command += ["--processes", str(processes), "--threads", str(threads)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=REPO_ROOT)
        pool = WorkerPool(process, log_path)
        try:
            yield pool
        finally:
            pool.stop()

    def wait_jobs(self, jobs: Iterable[tuple[str, str]], *, until: frozenset[str], timeout: float,
                  pool: WorkerPool | None = None, poll: float = 0.05) -> dict[tuple[str, str], Any]:
        """Wait until every ``(tenant, job_id)`` is in a state of ``until``; return their records.

        States are polled in one pipelined round trip, so waiting costs this process (which also serves
        the emulator) next to nothing while the workers run.
        """
        pending = list(jobs)
        settled: list[tuple[str, str]] = []
        wanted = {s.encode() for s in until}
        deadline = time.monotonic() + timeout
        while pending:
            pipe = self.client.pipeline(transaction=False)
            for tenant, job_id in pending:
                pipe.hget(keys.job(tenant, job_id), "state")
            states = pipe.execute()
            settled += [key for key, state in zip(pending, states, strict=True) if state in wanted]
            pending = [key for key, state in zip(pending, states, strict=True) if state not in wanted]
            if not pending:
                break
            if pool is not None:
                pool.check_alive()
            if time.monotonic() > deadline:
                store = JobStore(self.client)
                sample = {k: (r.state, r.error) if (r := store.get(*k)) else None for k in pending[:5]}
                raise TimeoutError(f"{len(pending)} jobs not settled after {timeout:.0f} s: {sample}")
            time.sleep(poll)
        store = JobStore(self.client)
        return {key: store.get(*key) for key in settled}


@contextlib.contextmanager
def worker_stack() -> Iterator[Stack]:
    """The benchmark's Redis (flushed before and after), an in-process emulator and a scratch directory."""
    url = shared_redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as scratch, EmulatorServer(orgs=[]) as emulator:
        env = {
            **os.environ,
            "REDIS_URL": url,
            "CRMSYNC_DATA_DIR": str(Path(scratch) / "data"),
            "CRMSYNC_LOG_FORMAT": "json",
            "CRMSYNC_SECRET_DIRS": scratch,
            "CRMSYNC_LOGIN_HOSTS": urlsplit(emulator.base_url).netloc,
        }
        try:
            yield Stack(url, client, emulator, Path(scratch), env)
        finally:
            client.flushdb()
