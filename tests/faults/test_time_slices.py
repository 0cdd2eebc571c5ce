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
from tests.faults.test_bulk_killed import campaigns_by_id, pull_bulk, push_bulk, requests_to
from worker.enqueue import enqueue_pull, enqueue_push
from worker.jobs.state import TERMINAL

RECORDS = 5_000  # 3 query pages of up to 2,000
PUSHED = 500  # 3 collections of up to 200
RESULTS_SET = 2_000  # the org's cap on a Bulk results set: 3 sets for RECORDS


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


@pytest.mark.slow
def test_bulk_jobs_go_on_slice_by_slice_with_the_same_salesforce_jobs(
    emulator: EmulatorServer, redis_url: str, start_pool: Callable[..., Pool], tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=RECORDS)
    org = tenant.org.name
    # One record a second: both jobs stay InProgress, polled slice after slice, until the test lets them finish.
    emulator.control.set_bulk_rate(org, 1)
    emulator.control.set_bulk_results_cap(org, RESULTS_SET)
    pool = start_pool(worker_environment(redis_url, tmp_path / "data", CRMSYNC_JOB_SLICE_SECONDS="0.001",
                                           CRMSYNC_BULK="always"))
    prefix = f"bslice-{tenant.name}-"
    rows = [{"External_Id__c": f"{prefix}{i}", "Name": f"B{i}"} for i in range(PUSHED)]
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    push_id = enqueue_push(client, tenant.name, "Campaign", rows, "External_Id__c")

    # A slice ends after each poll: three polls of each job are three slices.
    wait_until(lambda: pull_bulk(client, tenant).get("polls", 0) >= 3
               and push_bulk(client, tenant, push_id).get("polls", 0) >= 3, 120, "both Bulk jobs polled in slices",
               lambda: (pull_bulk(client, tenant), push_bulk(client, tenant, push_id), pool.log_text()[-2000:]))
    emulator.control.set_bulk_rate(org, 0, running=True)  # both done by their next poll
    wait_until(lambda: {tenant.job(pull_id).state, tenant.job(push_id).state} <= TERMINAL, 120,
               "both jobs to end", lambda: (tenant.job(pull_id), tenant.job(push_id)))
    pull, push = tenant.job(pull_id), tenant.job(push_id)
    assert (pull.state, pull.records) == ("done", RECORDS), pull
    assert (push.state, push.records, push.failed_records) == ("done", PUSHED, 0), push

    # One Salesforce job each, whatever the number of slices: one create, one upload, one close.
    assert sum(requests_to(emulator, tenant, "POST", "jobs/query").values()) == 1
    assert sum(requests_to(emulator, tenant, "POST", "jobs/ingest").values()) == 1
    assert sum(requests_to(emulator, tenant, "PUT", r"jobs/ingest/\w+/batches").values()) == 1
    assert sum(requests_to(emulator, tenant, "PATCH", r"jobs/ingest/\w+").values()) == 1
    # Each results set fetched once, by its own slice: the first, then the two the locators named.
    results = [e["query"] for e in emulator.control.request_log(org) if e["path"].endswith("/results")]
    assert len(results) == len(set(results)) == 3
    assert sum("locator=" in query for query in results) == 2
    # Every slice made progress: a slice per poll (each but the last ended after its poll), then a slice ended
    # after each of the first two results sets.
    why = Counter((e["job_id"], "next page" in e["why"]) for e in pool.log_events()
                  if e.get("event") == "job_sent_again")
    polls = {kind: sum(requests_to(emulator, tenant, "GET", rf"jobs/{kind}/\w+").values())
             for kind in ("query", "ingest")}
    assert min(polls.values()) >= 4
    assert (why[pull_id, False], why[pull_id, True]) == (polls["query"] - 1, 2)
    assert (why[push_id, False], why[push_id, True]) == (polls["ingest"] - 1, 0)

    path = tmp_path / "data" / tenant.name / "Lead.jsonl"
    ids = [json.loads(line)["Id"] for line in path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == RECORDS
    # Every request paid for, each credit on the job that spent it.
    assert pull.credits + push.credits == tenant.used() == tenant.counted()
    campaigns = campaigns_by_id(emulator, tenant, prefix)
    assert set(campaigns) == {r["External_Id__c"] for r in rows}
    assert set(campaigns.values()) == {1}
