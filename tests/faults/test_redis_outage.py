"""Redis stopped (or frozen) mid-run: fail closed, workers survive and reconnect, no job is lost.

One scenario per kind of outage (a module fixture), checked by two tests: what happens during the outage,
and what happens after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator import EmulatorServer
from quota import CreditBucket
from tests.conftest import wait_until
from tests.faults.conftest import (
    CRMSYNC,
    Pool,
    RedisServer,
    Tenant,
    broker_idle,
    connect_tenant,
    enqueue_elsewhere,
    worker_environment,
)
from worker.jobs.state import TERMINAL

pytestmark = pytest.mark.slow

OBJECTS = ("Lead", "Contact", "Account")
RECORDS = 5_000  # 3 pages a pull
PUSHED = 500  # 3 collections a push
OUTAGE_S = 6.0


@dataclass
class Outage:
    kind: str
    server: RedisServer
    pool: Pool
    tenants: list[Tenant]
    jobs: dict[str, list[str]]
    baseline: dict[str, int]  # emulator counts, constant during the outage
    alive_throughout: bool
    credits_after: dict[str, int]  # credits charged, read as soon as Redis was back


def _delivered(data_dir: Path, tenant: str, sobject: str) -> set[str]:
    path = data_dir / tenant / f"{sobject}.jsonl"
    return {json.loads(line)["Id"] for line in path.read_text().splitlines()} if path.exists() else set()


@pytest.fixture(scope="module", params=["stopped", "frozen"])
def outage(request: pytest.FixtureRequest, emulator: EmulatorServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    import subprocess  # noqa: PLC0415

    base = tmp_path_factory.mktemp(f"outage-{request.param}")
    server = RedisServer(base / "redis")
    server.dir.mkdir()
    server.start()
    client = server.client()
    tenants = [connect_tenant(emulator, client, base, records=RECORDS) for _ in range(3)]
    for tenant in tenants:
        emulator.control.set_faults(tenant.org.name, latency=0.15)
    env = worker_environment(server.url, base / "data", CRMSYNC_BULK="never")
    log_path = base / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([CRMSYNC, "worker", "--processes", "2", "--threads", "2"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    pool = Pool(process, log_path, base / "data", 2)
    try:
        pool.wait_ready()
        specs: list[dict[str, object]] = []
        for tenant in tenants:
            specs += [{"kind": "pull", "tenant": tenant.name, "sobject": s} for s in OBJECTS]
            rows = [{"External_Id__c": f"{tenant.name}-{i}", "Name": f"C{i}"} for i in range(PUSHED)]
            specs.append({"kind": "push", "tenant": tenant.name, "sobject": "Campaign", "records": rows})
        ids = enqueue_elsewhere(server.url, specs)
        jobs = {t.name: ids[i * 4:(i + 1) * 4] for i, t in enumerate(tenants)}

        wait_until(lambda: sum(t.counted() for t in tenants) >= 4, 60, "the first requests")  # mid-run
        server.stop() if request.param == "stopped" else server.freeze()
        started = time.monotonic()
        # A request that already held its credit may still be on the wire (latency 0.15 s); after that, nothing.
        settled_at = started + 1.0
        baseline: dict[str, int] = {}
        alive = True
        while time.monotonic() - started < OUTAGE_S:
            alive = alive and pool.all_alive()
            if time.monotonic() >= settled_at:
                counts = {t.name: t.counted() for t in tenants}
                baseline = baseline or counts
                assert counts == baseline, "a Salesforce request was sent while Redis was down"
            time.sleep(0.1)
        server.start() if request.param == "stopped" else server.thaw()
        bucket = CreditBucket(server.client())
        credits = {t.name: bucket.status(t.name).used for t in tenants}
        for tenant in tenants:
            tenant.client = server.client()
        yield Outage(request.param, server, pool, tenants, jobs, baseline, alive, credits)
    finally:
        pool.stop()
        server.stop()


def test_no_request_without_a_credit_and_workers_survive(outage: Outage) -> None:
    assert outage.alive_throughout, outage.pool.log_text()[-3000:]
    assert outage.pool.all_alive()
    for tenant in outage.tenants:
        # Fail closed: every request the emulator saw before and during the outage was paid for first.
        assert outage.credits_after[tenant.name] >= outage.baseline[tenant.name]
    if outage.kind == "stopped":
        # They saw the outage and kept going: Dramatiq's consumers restart, the resumer logs and retries.
        assert "Restarting consumer" in outage.pool.log_text() or "resumer_redis_error" in outage.pool.log_text()


def test_every_job_finishes_after_redis_returns(outage: Outage, request: pytest.FixtureRequest) -> None:
    tenants, jobs = outage.tenants, outage.jobs
    client = outage.server.client()

    def states() -> list[tuple[str, str, str, str]]:
        return [(t.job(j).kind, t.job(j).sobject, t.job(j).state, t.job(j).error[:120])
                for t in tenants for j in jobs[t.name]]

    def settled_or_lost() -> bool:
        # Settled, or nothing left anywhere that could ever move a job on (no message queued or unacked).
        return all(s[2] in TERMINAL for s in states()) or broker_idle(client)

    wait_until(settled_or_lost, 120, "every job to finish after Redis came back", states)
    assert all(s[2] == "done" for s in states()), f"jobs lost or failed: {states()}"
    for tenant in tenants:
        for sobject in OBJECTS:
            assert len(_delivered(outage.pool.data_dir, tenant.name, sobject)) == RECORDS, (tenant.name, sobject)
        assert tenant.job(jobs[tenant.name][3]).records == PUSHED
        assert tenant.used() == tenant.counted(), tenant.name
