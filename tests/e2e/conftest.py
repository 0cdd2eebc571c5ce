"""End-to-end fixtures: the emulator over HTTPS, real worker processes on a real Redis broker.

The worker processes run for the whole module; each test uses its own tenant and its own emulator org, so
tests never see each other's state and nothing needs flushing mid-module.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import redis

from emulator import EmulatorServer, OrgInfo
from quota import CreditBucket
from quota.connection import connect
from worker.devstack.processes import stop_group
from worker.enqueue import enqueue_pull, enqueue_push, wait_for
from worker.jobs.state import TERMINAL, JobRecord
from worker.salesforce.connections import ConnectionStore

_names = itertools.count(1)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(orgs=[]) as server:
        yield server


@pytest.fixture(scope="module")
def worker_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("worker")
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "CRMSYNC_DATA_DIR": str(base / "data"),
        "CRMSYNC_LOG_FORMAT": "json",
        # Retries back off for milliseconds, not seconds: the tests check counts, not timing.
        "CRMSYNC_RETRY_INITIAL_WAIT": "0.01",
        "CRMSYNC_RETRY_MAX_WAIT": "0.05",
        # A paused org is probed every second instead of every five minutes.
        "CRMSYNC_ORG_PROBE_SECONDS": "1",
        # Bulk API jobs are polled after 10 ms, then backing off to 0.3 s apart, instead of 2 s up to a minute.
        "CRMSYNC_BULK_POLL_SECONDS": "0.01",
        "PROMETHEUS_MULTIPROC_DIR": str(base / "metrics"),
    }


@dataclass
class Workers:
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def workers(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    log_path = tmp_path_factory.mktemp("worker-log") / "worker.log"
    crmsync = Path(sys.executable).with_name("crmsync")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(crmsync), "worker", "--processes", "2", "--threads", "2"],
            env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    yield Workers(process, log_path, Path(worker_env["CRMSYNC_DATA_DIR"]))
    stop_group(process)


@dataclass
class Tenant:
    """A tenant connected to its own emulator org, with a quota limit set."""

    name: str
    org: OrgInfo
    client: redis.Redis
    bucket: CreditBucket
    emulator: EmulatorServer

    def pull(self, sobject: str = "Lead", timeout: float = 120) -> JobRecord:
        job_id = enqueue_pull(self.client, self.name, sobject)
        return self._wait(job_id, timeout)

    def push(self, records: list[dict[str, object]], sobject: str = "Lead", timeout: float = 120) -> JobRecord:
        job_id = enqueue_push(self.client, self.name, sobject, records, "External_Id__c")
        return self._wait(job_id, timeout)

    def _wait(self, job_id: str, timeout: float) -> JobRecord:
        record = wait_for(self.client, self.name, job_id, timeout=timeout)
        assert record is not None
        return record

    def wait_done(self, job_id: str, timeout: float = 120) -> JobRecord:
        record = wait_for(self.client, self.name, job_id, timeout=timeout, until=TERMINAL)
        assert record is not None
        return record

    def counted_requests(self) -> int:
        return sum(1 for entry in self.emulator.control.request_log(self.org.name) if entry.get("counted"))

    def used_credits(self) -> int:
        return self.bucket.status(self.name).used


@pytest.fixture
def make_tenant(emulator: EmulatorServer, redis_url: str, tmp_path: Path):
    client = cast(redis.Redis, connect(redis_url))  # one node, or the cluster under tests/cluster

    def make(records: int = 50, limit: int = 100_000, environment: str = "production") -> Tenant:
        name = f"t{next(_names)}-{os.getpid()}"
        org = emulator.control.add_org(f"org-{name}", environment=environment, records=records)  # type: ignore[arg-type]
        secret = tmp_path / f"{name}.secret"
        secret.write_text(org.client_secret)
        ConnectionStore(client).connect(
            name, environment=environment, login_url=emulator.base_url, client_id=org.client_id,
            client_secret_file=str(secret), ca_bundle=emulator.ca_bundle,
        )
        bucket = CreditBucket(client)
        bucket.set_limit(name, limit, actor="e2e")
        return Tenant(name, org, client, bucket, emulator)

    return make
