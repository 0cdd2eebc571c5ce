"""A rolling tenant end to end: real worker processes park its jobs when the last 24 hours used its limit, and
resume them by themselves when its oldest credits come back, with nobody raising the limit.

The worker processes run ``tests.e2e.clocked_app``: their bucket reads the time from a ``SharedClock`` that this
test moves, so a day passes in an instant (everything else, the broker and the resumer's ticks included, runs on
the real clock).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quota import CreditBucket
from tests.conftest import T0
from tests.e2e.clock import SharedClock
from tests.e2e.conftest import Tenant, Workers
from tests.e2e.test_pause_resume import delivered_ids, wait_all
from worker.devstack.processes import stop_group
from worker.enqueue import enqueue_pull
from worker.jobs.parking import PauseStore
from worker.notifications import recent

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600
SETTLED = frozenset({"done", "failed", "stopped"})


@pytest.fixture(scope="module")
def clock(redis_url: str) -> SharedClock:
    shared = SharedClock(redis.Redis.from_url(redis_url))
    shared.set(T0)  # T0 starts an hour: credits taken in it come back 25 hours later, all at once
    return shared


@pytest.fixture(scope="module")
def workers(worker_env: dict[str, str], clock: SharedClock,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """The e2e worker pool, on the shared clock (instead of the server's)."""
    log_path = tmp_path_factory.mktemp("clocked-worker-log") / "worker.log"
    env = {key: value for key, value in worker_env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["dramatiq_worker_timeout"] = "200"  # as `crmsync worker` sets it: idle consumers poll every 0.2 s
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "tests.e2e.clocked_app", "--processes", "1", "--threads", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    yield Workers(process, log_path, Path(worker_env["CRMSYNC_DATA_DIR"]))
    stop_group(process)


def test_a_rolling_tenant_resumes_by_itself_when_its_oldest_credits_come_back(
    workers: Workers, make_tenant, clock: SharedClock
) -> None:
    tenant: Tenant = make_tenant(records=5_000)
    bucket = CreditBucket(tenant.client, clock=clock)
    bucket.set_limit(tenant.name, 100_000, actor="admin", window="rolling")
    assert bucket.take(tenant.name, 100_000 - 2).granted  # all but two credits, in the hour starting at T0
    jobs = [enqueue_pull(tenant.client, tenant.name, sobject) for sobject in ("Lead", "Contact")]
    assert [job.state for job in wait_all(tenant, jobs, frozenset({"parked"}))] == ["parked", "parked"]
    state = PauseStore(tenant.client).get(tenant.name)
    assert state is not None
    assert (state.reason, state.scope) == ("quota_exhausted", "all")
    assert tenant.counted_requests() == 2  # two pages, then no credit: nothing more was sent
    exhausted = [n for n in recent(tenant.client, tenant.name, limit=50) if n.kind == "quota_exhausted"]
    assert len(exhausted) == 1
    assert "API credits of the last 24 hours" in exhausted[0].message
    assert exhausted[0].details["resets_at"] == "2026-11-30T13:00:00+00:00"  # T0 + 25 h: when they come back
    changes = bucket.history(tenant.name)

    clock.set(T0 + 25 * HOUR - 1)
    assert bucket.status(tenant.name).available == 0  # a second early: none back yet, so nothing may resume
    clock.set(T0 + 25 * HOUR)  # the hour's credits come back; nobody touches the limit

    done = wait_all(tenant, jobs, SETTLED)
    assert [job.state for job in done] == ["done", "done"]
    assert PauseStore(tenant.client).get(tenant.name) is None
    assert bucket.history(tenant.name) == changes
    for sobject in ("Lead", "Contact"):
        ids = delivered_ids(workers, tenant, sobject)
        assert len(ids) == len(set(ids)) == 5_000, sobject
    # The T0 hour's credits are out of the window: what is used now is what the resumed jobs were charged.
    assert bucket.status(tenant.name).used == tenant.counted_requests() - 2 == 4
    kinds = [n.kind for n in recent(tenant.client, tenant.name, limit=50)]
    assert kinds.count("quota_restored") == 1
