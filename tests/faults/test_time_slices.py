"""Long jobs run in time slices: at a checkpoint past CRMSYNC_JOB_SLICE_SECONDS a job is sent again and goes on
from there, so none runs into Dramatiq's time limit (which would interrupt it anywhere, mid-request included)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from emulator import EmulatorServer
from tests.conftest import wait_until
from tests.faults.conftest import Pool, connect_tenant, worker_environment
from worker.enqueue import enqueue_pull, enqueue_push
from worker.jobs.state import TERMINAL

RECORDS = 5_000  # 3 query pages of up to 2,000
PUSHED = 500  # 3 collections of up to 200


@pytest.mark.slow
def test_jobs_go_on_slice_by_slice_from_their_checkpoints(
    emulator: EmulatorServer, redis_url: str, start_pool: Callable[..., Pool], tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=RECORDS)
    # A slice shorter than any page: every job stops at each checkpoint and is sent again.
    pool = start_pool(worker_environment(redis_url, tmp_path / "data", CRMSYNC_JOB_SLICE_SECONDS="0.001",
                                           CRMSYNC_BULK="never"))
    rows = [{"External_Id__c": f"slice-{tenant.name}-{i}", "Name": f"S{i}"} for i in range(PUSHED)]
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    push_id = enqueue_push(client, tenant.name, "Campaign", rows, "External_Id__c")

    wait_until(lambda: {tenant.job(pull_id).state, tenant.job(push_id).state} <= TERMINAL, 120,
               "both jobs to end", lambda: (tenant.job(pull_id), tenant.job(push_id)))
    pull, push = tenant.job(pull_id), tenant.job(push_id)
    assert (pull.state, pull.records, pull.credits) == ("done", RECORDS, 3)
    assert (push.state, push.records, push.credits) == ("done", PUSHED, 3)
    # Each page and each batch once: a slice goes on from the checkpoint, it never starts over.
    path = tmp_path / "data" / tenant.name / "Lead.jsonl"
    ids = [json.loads(line)["Id"] for line in path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == RECORDS
    assert tenant.used() == tenant.counted() == 6
    sent_again = Counter(e["job_id"] for e in pool.log_events() if e.get("event") == "job_sent_again")
    assert sent_again == {pull_id: 2, push_id: 2}
