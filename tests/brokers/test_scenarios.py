"""The same scenarios on each broker (``broker`` is parametrized over Redis and RabbitMQ): a pull end to end,
parking when credits run out and resuming on a limit raise, dead letters, time slices, and a worker pool killed
mid-job whose job is redelivered and finishes once.

Real parts throughout: ``crmsync worker`` pools, the emulator over HTTPS, Redis for state, and the broker under
test (the session's Redis, or a RabbitMQ node started by the tests).
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from emulator import EmulatorServer
from tests.brokers.conftest import BrokerUnderTest
from tests.conftest import wait_until
from tests.faults.conftest import Pool, Tenant, connect_tenant
from worker.broker import send
from worker.enqueue import PULL_ACTOR, QUEUE, enqueue_pull, enqueue_push
from worker.jobs.actors import LOCK_TTL_S, MAX_RETRIES
from worker.jobs.parking import PauseStore
from worker.jobs.state import TERMINAL

pytestmark = pytest.mark.slow


def _delivered(data_dir: Path, tenant: Tenant, sobject: str = "Lead") -> list[str]:
    path = data_dir / tenant.name / f"{sobject}.jsonl"
    return [json.loads(line)["Id"] for line in path.read_text().splitlines()] if path.exists() else []


def _wait_ended(tenant: Tenant, *job_ids: str, timeout: float = 120) -> None:
    wait_until(lambda: {tenant.job(j).state for j in job_ids} <= TERMINAL, timeout, "the jobs to end",
               lambda: [tenant.job(j) for j in job_ids])


def test_a_pull_runs_end_to_end(broker: BrokerUnderTest, emulator: EmulatorServer,
                                start_pool: Callable[..., Pool], tmp_path: Path, secrets_dir: Path) -> None:
    client = redis.Redis.from_url(broker.redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=4_500)
    pool = start_pool(broker.env(tmp_path / "data", CRMSYNC_BULK="never"))
    rows = [{"External_Id__c": f"e2e-{tenant.name}-{i}", "Name": f"E{i}"} for i in range(300)]
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    push_id = enqueue_push(client, tenant.name, "Campaign", rows, "External_Id__c")
    _wait_ended(tenant, pull_id, push_id)
    assert (tenant.job(pull_id).state, tenant.job(pull_id).records) == ("done", 4_500)
    assert (tenant.job(push_id).state, tenant.job(push_id).records) == ("done", 300)
    ids = _delivered(pool.data_dir, tenant)
    assert len(ids) == len(set(ids)) == 4_500
    assert tenant.used() == tenant.counted() == 3 + 2  # three query pages, two collections


def test_jobs_park_when_credits_run_out_and_resume_on_a_limit_raise(
    broker: BrokerUnderTest, emulator: EmulatorServer, start_pool: Callable[..., Pool],
    tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(broker.redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=6_000)  # 3 pages
    tenant.bucket.take(tenant.name, 100_000 - 2)  # 2 credits left
    pool = start_pool(broker.env(tmp_path / "data", CRMSYNC_BULK="never"))
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    wait_until(lambda: tenant.job(pull_id).state == "parked", 60, "the pull to park", lambda: tenant.job(pull_id))
    pause = PauseStore(client).get(tenant.name)
    assert pause is not None
    assert pause.reason == "quota_exhausted"
    assert tenant.job(pull_id).records == 4_000
    assert tenant.counted() == 2  # nothing sent without a credit

    tenant.bucket.set_limit(tenant.name, 200_000, actor="broker-test")
    _wait_ended(tenant, pull_id)
    assert tenant.job(pull_id).state == "done"
    assert PauseStore(client).get(tenant.name) is None
    ids = _delivered(pool.data_dir, tenant)
    assert len(ids) == len(set(ids)) == 6_000
    assert tenant.used() - (100_000 - 2) == tenant.counted() == 3


def test_bad_messages_are_dead_lettered_and_the_queue_goes_on(
    broker: BrokerUnderTest, emulator: EmulatorServer, start_pool: Callable[..., Pool],
    tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(broker.redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=4)
    start_pool(broker.env(tmp_path / "data"), processes=1, threads=2)
    garbage = b"\x00{not a message"
    broker.put_raw(garbage)
    invalid = send(QUEUE, PULL_ACTOR, {"tenant": "Bad{Tenant}", "sobject": "Lead", "job_id": "x"})  # InvalidJob
    pull_id = enqueue_pull(client, tenant.name, "Lead")  # behind both: not blocked by them
    _wait_ended(tenant, pull_id)
    assert (tenant.job(pull_id).state, tenant.job(pull_id).records) == ("done", 4)
    wait_until(lambda: garbage in broker.dead_letters() and invalid.message_id in broker.dead_message_ids(), 60,
               "both bad messages in the dead-letter queue", broker.dead_letters)
    assert tenant.counted() == 1


def test_a_long_job_runs_in_time_slices(
    broker: BrokerUnderTest, emulator: EmulatorServer, start_pool: Callable[..., Pool],
    tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(broker.redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=5_000)
    # A slice shorter than any page: the job stops at each checkpoint and is sent again through the broker.
    pool = start_pool(broker.env(tmp_path / "data", CRMSYNC_JOB_SLICE_SECONDS="0.001", CRMSYNC_BULK="never"))
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    _wait_ended(tenant, pull_id)
    assert (tenant.job(pull_id).state, tenant.job(pull_id).records) == ("done", 5_000)
    ids = _delivered(pool.data_dir, tenant)
    assert len(ids) == len(set(ids)) == 5_000
    assert tenant.used() == tenant.counted() == 3
    sent_again = Counter(e["job_id"] for e in pool.log_events() if e.get("event") == "job_sent_again")
    assert sent_again == {pull_id: 2}


def test_a_killed_pools_job_is_redelivered_and_finishes_once(
    broker: BrokerUnderTest, emulator: EmulatorServer, start_pool: Callable[..., Pool],
    tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(broker.redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=8_000)  # 4 pages
    emulator.control.set_faults(tenant.org.name, latency=0.4)
    # Redis: a dead pool's messages move on once its heartbeat is 3 s old, looked for on every broker call.
    # RabbitMQ: at once, when the dead pool's connections drop (these settings do not apply there).
    env = broker.env(tmp_path / "data", CRMSYNC_BULK="never", CRMSYNC_BROKER_HEARTBEAT_TIMEOUT="3",
                     CRMSYNC_BROKER_MAINTENANCE_CHANCE="1000000")
    first = start_pool(env, processes=1, threads=2)
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    wait_until(lambda: tenant.job(pull_id).records >= 2_000, 60, "the pull to be mid-way", lambda: tenant.job(pull_id))
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert tenant.job(pull_id).records < 8_000

    second = start_pool(env, processes=1, threads=2)
    # The dead pool's object lock expires after LOCK_TTL_S; until then the redelivered job waits (JobBusy).
    _wait_ended(tenant, pull_id, timeout=LOCK_TTL_S + 90)
    assert tenant.job(pull_id).state == "done"
    ids = _delivered(second.data_dir, tenant)
    assert len(set(ids)) == 8_000
    assert len(ids) - 8_000 <= 2_000, "more than the page in flight was delivered twice"
    # While the dead pool's lock lived, the redelivered job was sent again with a delay (the busy-object path).
    busy = [e for e in second.log_events() if e.get("event") == "job_sent_again" and e.get("job_id") == pull_id]
    assert busy, "the redelivered job never met the dead pool's lock"
    assert {e["why"] for e in busy} == {"waiting for another job on the same object"}
    # Finished once: one run of the job ended it, in the second pool.
    done = [e for e in second.log_events() if e.get("event") == "job_done" and e.get("job_id") == pull_id]
    assert len(done) == 1, done
    assert tenant.counted() <= tenant.used() <= tenant.counted() + 1  # a credit taken just before the kill


def test_a_job_failing_every_retry_is_dead_lettered(
    broker: BrokerUnderTest, emulator: EmulatorServer, start_pool: Callable[..., Pool], tmp_path: Path,
    secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(broker.redis_url)
    tenant = connect_tenant(emulator, client, secrets_dir, records=4)
    emulator.control.set_faults(tenant.org.name, error_rate=1.0, error_status=500)  # every request fails
    start_pool(broker.env(tmp_path / "data", CRMSYNC_RETRY_ATTEMPTS="1"), processes=1, threads=2)
    pull_id = enqueue_pull(client, tenant.name, "Lead")
    # Dramatiq's retries wait in the delay queue (about 2, 4 and 8 s), then the last failure is dead-lettered.
    _wait_ended(tenant, pull_id, timeout=180)
    assert tenant.job(pull_id).state == "failed"
    wait_until(lambda: any(json.loads(body).get("kwargs", {}).get("job_id") == pull_id
                           for body in broker.dead_letters()), 60, "the failed job in the dead-letter queue")
    [dead] = [m for m in map(json.loads, broker.dead_letters()) if m.get("kwargs", {}).get("job_id") == pull_id]
    assert dead["options"]["retries"] == MAX_RETRIES  # the first run and 3 retries, each through the delay queue
    assert tenant.counted() == tenant.used() == MAX_RETRIES + 1  # one request a run, each paid for
