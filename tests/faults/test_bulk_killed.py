"""A worker pool killed with SIGKILL in the middle of Bulk API 2.0 jobs: the new pool goes on with the same
Salesforce jobs (never a second create, never a second upload to a job), nothing is lost or written twice, and
every request is paid for.

As in ``test_worker_killed``, SIGKILL to the process group kills the Dramatiq worker processes mid-step; the
test requeues the dead pool's messages once its heartbeat is older than 3 s, and they run once its object locks
expire. Nothing depends on the machine's speed: the org holds the Bulk jobs InProgress (a record a second) until
the pool is dead, then lets them finish; an upload is held in flight by a planned 30 s answer; and the pools keep
Dramatiq's 60 s heartbeat timeout, so a live worker stalled a few seconds on a loaded machine is never taken for
dead (its running job would be handed to a second worker).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import requests
from dramatiq.brokers.redis import RedisBroker

from emulator import EmulatorServer
from tests.conftest import wait_until
from tests.faults.conftest import Pool, Tenant, connect_tenant, worker_environment
from worker import keys
from worker.broker import NAMESPACE
from worker.enqueue import QUEUE, enqueue_pull, enqueue_push
from worker.jobs.actors import LOCK_TTL_S

RECORDS = 30_000  # 15 REST pages, or the first page and one Bulk query job
PUSHED = 20_000  # 100 sObject Collections, or one Bulk ingest job
HEARTBEAT_S = 3
DEADLINE = LOCK_TTL_S + 150


def _requeue_dead(url: str, client: redis.Redis) -> Callable[[], None]:
    """Call after the kill: each call runs Dramatiq's broker maintenance (requeue the messages of workers silent
    for HEARTBEAT_S, see ``test_worker_killed``) until the workers known now (the dead pool's) hold no message,
    and nothing after that: later, it could take a live worker of the new pool, stalled for a few seconds, for
    dead and hand its running job to another worker."""
    broker = RedisBroker(url=url, namespace=NAMESPACE, heartbeat_timeout=HEARTBEAT_S * 1000,
                         maintenance_chance=1_000_000)
    dead = [m.decode() for m in cast(list[bytes], client.zrange(f"{NAMESPACE}:__heartbeats__", 0, -1))]
    done = False

    def holding() -> bool:  # the unacknowledged messages of the queue the maintenance below looks after
        return any(int(client.scard(f"{NAMESPACE}:__acks__.{worker}.{QUEUE}")) for worker in dead)  # type: ignore[arg-type]

    def step() -> None:
        nonlocal done
        if not done:
            broker.do_qsize(QUEUE)
            done = not holding()

    return step


def pull_bulk(client: redis.Redis, tenant: Tenant) -> dict[str, Any]:
    raw = cast(bytes | None, client.hget(keys.pull_checkpoint(tenant.name, "Lead"), "state"))
    state = json.loads(raw) if raw else {}
    return cast(dict[str, Any], state.get("bulk") or {})


def push_bulk(client: redis.Redis, tenant: Tenant, job_id: str) -> dict[str, Any]:
    raw = cast(bytes | None, client.hget(keys.push_records(tenant.name, job_id), "bulk"))
    return cast(dict[str, Any], json.loads(raw)) if raw else {}


def requests_to(emulator: EmulatorServer, tenant: Tenant, method: str, pattern: str) -> Counter[str]:
    """The org's requests with ``method`` on paths under /services/data/vXX.X/ matching ``pattern``, by path."""
    wanted = re.compile(rf"{method} /services/data/v[0-9.]+/{pattern}")
    return Counter({key: n for key, n in emulator.control.request_counts(tenant.org.name).items()
                    if wanted.fullmatch(key)})


def job_state(emulator: EmulatorServer, tenant: Tenant, kind: str, job_id: str) -> str:
    """A Bulk job's state as the emulator holds it (read in-process: no counted request)."""
    with emulator.registry.lock:
        return emulator.registry.org(tenant.org.name).bulk.get(kind, job_id).state


def campaigns_by_id(emulator: EmulatorServer, tenant: Tenant, prefix: str) -> Counter[str]:
    """How many Campaigns carry each external id starting with ``prefix`` (read through REST)."""
    token = emulator.control.issue_token(tenant.org.name)
    http = requests.Session()
    http.trust_env = False
    http.verify = emulator.ca_bundle
    http.headers["Authorization"] = f"Bearer {token}"
    found: Counter[str] = Counter()
    url = (f"{tenant.org.instance_url}/services/data/v59.0/query?q=SELECT+Id,External_Id__c+FROM+Campaign+WHERE+"
           f"External_Id__c+LIKE+'{prefix}%25'")
    while url:
        page = http.get(url, timeout=30).json()
        found.update(r["External_Id__c"] for r in page["records"])
        url = f"{tenant.org.instance_url}{page['nextRecordsUrl']}" if not page["done"] else ""
    return found


def _kill(pool: Pool) -> None:
    os.killpg(pool.process.pid, signal.SIGKILL)
    pool.process.wait(timeout=10)


@pytest.mark.slow
def test_sigkill_mid_poll_resumes_the_same_bulk_jobs(
    emulator: EmulatorServer, redis_url: str, start_pool: Callable[..., Pool], tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=RECORDS)
    # A record a second: both jobs are InProgress, being polled, when the pool dies, however slow the machine.
    emulator.control.set_bulk_rate(tenant.org.name, 1)
    env = worker_environment(redis_url, tmp_path / "data")
    first = start_pool(env, processes=2, threads=2)
    prefix = f"bk-{tenant.name}-"
    rows = [{"External_Id__c": f"{prefix}{i}", "Name": f"K{i}"} for i in range(PUSHED)]
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    push_id = enqueue_push(client, tenant.name, "Campaign", rows, "External_Id__c")

    def mid_poll() -> bool:
        push = push_bulk(client, tenant, push_id)
        return pull_bulk(client, tenant).get("polls", 0) >= 2 and push.get("stage") == "closed" \
            and push["polls"] >= 2

    wait_until(mid_poll, 90, "both Bulk jobs to be polled",
               lambda: (pull_bulk(client, tenant), push_bulk(client, tenant, push_id)))
    _kill(first)
    query_job, ingest_job = pull_bulk(client, tenant)["job_id"], push_bulk(client, tenant, push_id)["job_id"]
    assert job_state(emulator, tenant, "query", query_job) in ("UploadComplete", "InProgress")
    assert job_state(emulator, tenant, "ingest", ingest_job) in ("UploadComplete", "InProgress")
    assert tenant.job(pull_id).state != "done"
    assert tenant.job(push_id).state != "done"

    requeue = _requeue_dead(redis_url, client)
    emulator.control.set_bulk_rate(tenant.org.name, 0, running=True)  # both done by their next poll
    second = start_pool(env, processes=2, threads=2)

    def finished() -> bool:
        requeue()
        return tenant.job(pull_id).state == "done" and tenant.job(push_id).state == "done"

    # The dead pool's object locks expire after LOCK_TTL_S; until then the redelivered jobs wait (JobBusy).
    wait_until(finished, DEADLINE, "the redelivered jobs to finish",
               lambda: (tenant.job(pull_id), tenant.job(push_id)))

    # The same Salesforce jobs went on: one create of each, one upload, and only those two jobs ever polled.
    assert sum(requests_to(emulator, tenant, "POST", "jobs/query").values()) == 1
    assert sum(requests_to(emulator, tenant, "POST", "jobs/ingest").values()) == 1
    assert sum(requests_to(emulator, tenant, "PUT", r"jobs/ingest/\w+/batches").values()) == 1
    polled = {key.rsplit("/", 1)[1] for key in requests_to(emulator, tenant, "GET", r"jobs/(query|ingest)/\w+")}
    assert polled == {query_job, ingest_job}
    assert not [e for e in second.log_events() if e.get("event") in ("bulk_job_lost", "bulk_job_recreated")]

    # No record lost or delivered twice by the pull; none written twice by the push.
    path = tmp_path / "data" / tenant.name / "Lead.jsonl"
    ids = [json.loads(line)["Id"] for line in path.read_text().splitlines()]
    assert len(set(ids)) == RECORDS
    assert len(ids) == RECORDS
    assert (tenant.job(pull_id).records, tenant.job(push_id).records) == (RECORDS, PUSHED)
    # Paid for every request; a job killed after taking a credit, before its request arrived, loses that credit:
    # at most one for each of the two jobs running at the kill.
    assert tenant.counted() <= tenant.used() <= tenant.counted() + 2
    campaigns = campaigns_by_id(emulator, tenant, prefix)
    assert set(campaigns) == {r["External_Id__c"] for r in rows}
    assert set(campaigns.values()) == {1}


@pytest.mark.slow
def test_sigkill_mid_upload_recreates_the_ingest_job_and_writes_each_record_once(
    emulator: EmulatorServer, redis_url: str, start_pool: Callable[..., Pool], tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=0)
    org = tenant.org.name
    emulator.control.set_bulk_rate(org, 0)
    # /limits and the create are answered at once, the upload 30 s after it arrived: the pool dies while the upload
    # is in flight (it arrived; the answer did not).
    emulator.control.inject_fault(org, "latency", 2, latency=0.0)
    emulator.control.inject_fault(org, "latency", 1, latency=30.0)
    env = worker_environment(redis_url, tmp_path / "data")
    first = start_pool(env, processes=1, threads=1)
    prefix = f"up-{tenant.name}-"
    rows = [{"External_Id__c": f"{prefix}{i}", "Name": f"U{i}"} for i in range(PUSHED)]
    push_id = enqueue_push(client, tenant.name, "Campaign", rows, "External_Id__c")
    uploading = wait_until(lambda: push_bulk(client, tenant, push_id).get("stage") == "uploading"
                           and push_bulk(client, tenant, push_id), 90, "the upload to be sent",
                           lambda: push_bulk(client, tenant, push_id))
    wait_until(lambda: sum(requests_to(emulator, tenant, "PUT", r"jobs/ingest/\w+/batches").values()) == 1, 30,
               "the upload to arrive")
    _kill(first)
    emulator.control.clear_faults(org)
    assert push_bulk(client, tenant, push_id)["stage"] == "uploading"
    held = [e for e in emulator.control.request_log(org) if e["method"] == "PUT"]
    assert [e["latency"] for e in held] == [30.0]  # the planned answers fell where meant

    requeue = _requeue_dead(redis_url, client)
    second = start_pool(env, processes=1, threads=1)

    def finished() -> bool:
        requeue()
        return tenant.job(push_id).state == "done"

    wait_until(finished, DEADLINE, "the redelivered push to finish", lambda: tenant.job(push_id))

    # The job whose upload may have arrived was aborted, never closed nor uploaded to again; a new one did the work.
    assert job_state(emulator, tenant, "ingest", uploading["job_id"]) == "Aborted"
    uploads = requests_to(emulator, tenant, "PUT", r"jobs/ingest/\w+/batches")
    assert sum(requests_to(emulator, tenant, "POST", "jobs/ingest").values()) == 2
    assert len(uploads) == 2
    assert set(uploads.values()) == {1}
    recreated = [e for e in second.log_events() if e.get("event") == "bulk_job_recreated"]
    assert [e["bulk_job"] for e in recreated] == [uploading["job_id"]]
    assert (tenant.job(push_id).records, tenant.job(push_id).failed_records) == (PUSHED, 0)
    assert tenant.counted() <= tenant.used() <= tenant.counted() + 1
    campaigns = campaigns_by_id(emulator, tenant, prefix)
    assert set(campaigns) == {r["External_Id__c"] for r in rows}
    assert set(campaigns.values()) == {1}
