"""The job lifecycle: each way a run ends maps to its row, and real runs on a Dramatiq worker are counted by
job kind in ``crmsync_jobs_total``, never by notification kind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from prometheus_client import REGISTRY

from quota import CreditBucket
from quota.errors import QuotaExhausted
from worker.enqueue import PULL_ACTOR, QUEUE
from worker.errors import (
    AuthFailed,
    InvalidName,
    JobBusy,
    NotConnected,
    OrgLimitExceeded,
    SliceEnded,
    UnsafeRequest,
)
from worker.jobs import lifecycle
from worker.jobs.actors import declare_actors
from worker.jobs.parking import PauseStore
from worker.jobs.state import JobStore
from worker.metrics.instruments import JOBS
from worker.metrics.jobs import JobMetrics
from worker.notifications import KINDS, recent


@pytest.mark.parametrize(("error", "outcome"), [
    (QuotaExhausted("acme", remaining=0, limit=5, resets_at=datetime(2026, 11, 30, tzinfo=UTC)),
     lifecycle.OUT_OF_CREDITS),
    (QuotaExhausted("acme", remaining=0, limit=0, resets_at=None), lifecycle.OUT_OF_CREDITS),
    (OrgLimitExceeded("acme", "95% used"), lifecycle.ORG_LIMIT),
    (AuthFailed("acme", "token refused", error="invalid_grant"), lifecycle.AUTH_FAILED),
    (NotConnected("acme"), lifecycle.NOT_CONNECTED),
    (InvalidName("bad field"), lifecycle.INVALID_INPUT),
    (UnsafeRequest("redirect to evil.example refused"), lifecycle.UNSAFE),
    (JobBusy("another job"), lifecycle.BUSY),
    (SliceEnded("300 s"), lifecycle.SLICE_ENDED),
    (redis.ConnectionError("refused"), lifecycle.RETRYING),
    (RuntimeError("bug"), lifecycle.RETRYING),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "")
def test_each_error_ends_the_run_by_its_row(error: Exception, outcome: lifecycle.Outcome) -> None:
    assert lifecycle.outcome_of(error, last_try=False) is outcome


def test_the_last_retry_fails_the_job_and_earlier_rows_still_win() -> None:
    assert lifecycle.outcome_of(RuntimeError("bug"), last_try=True) is lifecycle.RETRIES_EXHAUSTED
    assert lifecycle.outcome_of(JobBusy("another job"), last_try=True) is lifecycle.BUSY


def test_rows_say_state_count_pause_and_what_is_raised() -> None:
    rows = {
        "DONE": ("done", "done", None, None),
        "TENANT_PAUSED": ("parked", "parked", "quota_exhausted", None),
        "OUT_OF_CREDITS": ("parked", "parked", "quota_exhausted", None),
        "ORG_LIMIT": ("parked", "parked", "org_limit", None),
        "AUTH_FAILED": ("parked", "parked", "auth_failed", None),
        "NOT_CONNECTED": ("stopped", "stopped", None, None),
        "INVALID_INPUT": ("failed", "failed", None, "dead_letter"),
        "UNSAFE": ("failed", "failed", None, None),
        "BUSY": ("queued", None, None, None),
        "SLICE_ENDED": ("queued", None, None, None),
        "RETRYING": ("retrying", None, None, "retry"),
        "RETRIES_EXHAUSTED": ("failed", "failed", None, "retry"),
    }
    for name, row in rows.items():
        outcome: lifecycle.Outcome = getattr(lifecycle, name)
        assert (outcome.state, outcome.counted, outcome.pause, outcome.raises) == row, name
    assert (lifecycle.BUSY.send_again, lifecycle.BUSY.delay_ms) == (True, lifecycle.BUSY_DELAY_MS)
    assert (lifecycle.SLICE_ENDED.send_again, lifecycle.SLICE_ENDED.delay_ms) == (True, None)
    assert lifecycle.RETRYING.describe(TimeoutError("slow")) == "TimeoutError: slow"


def test_only_running_into_the_reserve_pauses_normal_jobs_alone() -> None:
    resets = datetime(2026, 11, 30, tzinfo=UTC)
    reserve_only = QuotaExhausted("acme", remaining=500, limit=100_000, resets_at=resets, reserve=500)
    empty = QuotaExhausted("acme", remaining=0, limit=100_000, resets_at=resets, reserve=500)
    assert lifecycle.OUT_OF_CREDITS.pause_scope(reserve_only) == "normal"
    assert lifecycle.OUT_OF_CREDITS.pause_scope(empty) == "all"
    assert lifecycle.TENANT_PAUSED.pause_scope(None) == "normal"  # finding a pause never widens it
    assert lifecycle.ORG_LIMIT.pause_scope(OrgLimitExceeded("acme", "95% used")) == "all"
    assert lifecycle.AUTH_FAILED.pause_scope(AuthFailed("acme", "refused", error="invalid_grant")) == "all"


def test_redis_down_is_found_in_the_cause_chain() -> None:
    wrapped = RuntimeError("take failed")
    wrapped.__cause__ = redis.TimeoutError("timed out")
    assert lifecycle.redis_down(wrapped)
    assert not lifecycle.redis_down(RuntimeError("bug"))


@pytest.fixture
def stub_worker(redis_client: redis.Redis) -> Iterator[StubBroker]:
    """The job actors on an in-memory broker with the worker app's job counting, run by a real Dramatiq worker
    (the jobs themselves use this session's Redis through the process runtime)."""
    broker = StubBroker()
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(JobMetrics())
    declare_actors(broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    yield broker
    worker.stop()


def _run_pull(broker: StubBroker, client: redis.Redis, tenant: str, **priority: str) -> str:
    job_id = uuid.uuid4().hex
    JobStore(client).create(tenant, job_id, "pull", "Lead")
    broker.get_actor(PULL_ACTOR).send(tenant=tenant, sobject="Lead", job_id=job_id, seq=1, **priority)
    broker.join(QUEUE)
    return job_id


def _jobs_total(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("crmsync_jobs_total", {"kind": kind, "outcome": outcome}) or 0.0


def test_a_job_stopped_for_its_configuration_counts_by_job_kind(stub_worker: StubBroker,
                                                                redis_client: redis.Redis) -> None:
    CreditBucket(redis_client).set_limit("acme", 100_000, actor="t")  # a limit, but no Salesforce connection
    before = _jobs_total("pull", "stopped")
    job_id = _run_pull(stub_worker, redis_client, "acme")
    record = JobStore(redis_client).get("acme", job_id)
    assert record is not None
    assert record.state == "stopped"
    assert _jobs_total("pull", "stopped") == before + 1
    # The notification kind is the notification's label, never the job's.
    assert [n.kind for n in recent(redis_client, "acme")] == ["config_invalid"]
    kinds = {sample.labels["kind"] for family in JOBS.collect() for sample in family.samples}
    assert kinds <= {"pull", "push"}
    assert not kinds & KINDS


def test_a_job_of_a_paused_tenant_parks_and_counts_once(stub_worker: StubBroker, redis_client: redis.Redis) -> None:
    CreditBucket(redis_client).set_limit("acme", 100_000, actor="t")
    pauses = PauseStore(redis_client)
    pauses.pause("acme", "org_limit", "org at 95%")
    before = _jobs_total("pull", "parked")
    job_id = _run_pull(stub_worker, redis_client, "acme")
    record = JobStore(redis_client).get("acme", job_id)
    assert record is not None
    assert (record.state, record.error) == ("parked", "tenant paused")
    assert pauses.parked_count("acme") == 1
    pause = pauses.get("acme")
    assert pause is not None
    assert pause.reason == "org_limit"  # the first pause's reason is kept
    assert _jobs_total("pull", "parked") == before + 1
    assert recent(redis_client, "acme") == []


def test_an_essential_job_goes_on_while_only_normal_jobs_are_paused(stub_worker: StubBroker,
                                                                   redis_client: redis.Redis) -> None:
    CreditBucket(redis_client).set_limit("acme", 100_000, actor="t")  # a limit, but no Salesforce connection
    pauses = PauseStore(redis_client)
    pauses.pause("acme", "quota_exhausted", "only the reserve is left")
    assert pauses.narrow("acme", "quota_exhausted")
    normal = JobStore(redis_client).get("acme", _run_pull(stub_worker, redis_client, "acme"))
    essential = JobStore(redis_client).get("acme", _run_pull(stub_worker, redis_client, "acme",
                                                             priority="essential"))
    assert normal is not None
    assert essential is not None
    assert (normal.state, normal.error) == ("parked", "tenant paused")
    assert essential.state == "stopped"  # it ran: it found no connection, where a parked job finds nothing
    assert (pauses.parked_count("acme"), pauses.essential_count("acme")) == (1, 0)
    pause = pauses.get("acme")
    assert pause is not None
    assert pause.scope == "normal"  # the normal job found the pause and did not widen it
