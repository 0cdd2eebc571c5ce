"""The resumer on a real Redis with an injected clock: when each kind of pause ends, and in what order."""

from __future__ import annotations

import threading
from typing import Any

import redis

from quota import CreditBucket
from tests.conftest import T0, FakeClock
from worker import keys
from worker.jobs.parking import ParkedJob, PauseStore
from worker.jobs.resume import Resumer, ResumerSettings

MIDNIGHT = T0 + 12 * 3600


class Sent:
    """Records what the resumer hands to the broker."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, int]] = []

    def __call__(self, job: ParkedJob, delay_ms: int) -> None:
        self.jobs.append((job.kwargs["job_id"], delay_ms))


class Notified(list[tuple[str, str, str]]):
    """Records the kind, tenant and message of each notification raised."""

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None:
        self.append((kind, tenant, message))


def park(pauses: PauseStore, tenant: str, seqs: list[int], reason: str = "quota_exhausted") -> None:
    for seq in seqs:
        job = ParkedJob("crmsync_pull", {"tenant": tenant, "sobject": "Lead", "job_id": f"j{seq}", "seq": seq})
        pauses.park(tenant, job, reason, "credits used up")  # type: ignore[arg-type]


def make(client: redis.Redis, clock: FakeClock, probe=None, **settings: float) -> tuple[Resumer, Sent]:
    sent = Sent()
    resumer = Resumer(client, CreditBucket(client, clock=clock), PauseStore(client, clock=clock), sent,
                      Notified(), probe=probe, settings=ResumerSettings(**settings), clock=clock)  # type: ignore[arg-type]
    return resumer, sent


def test_parked_jobs_resume_at_the_reset_in_their_original_order(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t")
    bucket.take("acme", 100_000)
    pauses = PauseStore(redis_client, clock=clock)
    park(pauses, "acme", [5, 2, 9, 3])
    resumer, sent = make(redis_client, clock)
    assert resumer.tick() == []
    assert pauses.parked_count("acme") == 4
    clock.now = MIDNIGHT
    assert resumer.tick() == ["acme"]
    assert sent.jobs == [("j2", 0), ("j3", 100), ("j5", 200), ("j9", 300)]
    assert isinstance(resumer.notifier, Notified)
    assert resumer.notifier == [("quota_restored", "acme", "tenant acme: API credits are available again "
                                 "(100,000 of 100,000); 4 parked jobs resumed")]
    assert pauses.get("acme") is None
    assert pauses.parked_count("acme") == 0
    assert pauses.paused_tenants() == []


def test_raising_the_limit_resumes_on_the_next_tick(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t")
    bucket.take("acme", 100_000)
    park(PauseStore(redis_client, clock=clock), "acme", [1])
    resumer, sent = make(redis_client, clock)
    assert resumer.tick() == []
    bucket.set_limit("acme", 150_000, actor="admin")
    assert resumer.tick() == ["acme"]
    assert sent.jobs == [("j1", 0)]


def test_auth_pause_waits_for_a_manual_resume(redis_client: redis.Redis, clock: FakeClock) -> None:
    CreditBucket(redis_client, clock=clock).set_limit("acme", 100_000, actor="t")
    park(PauseStore(redis_client, clock=clock), "acme", [1, 2], reason="auth_failed")
    resumer, sent = make(redis_client, clock)
    clock.advance(10 * 86_400)
    assert resumer.tick() == []
    assert resumer.resume("acme", by="cli") == 2
    assert [job for job, _ in sent.jobs] == ["j1", "j2"]


def test_org_pause_probes_at_a_bounded_rate_and_resumes_below_the_share(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    CreditBucket(redis_client, clock=clock).set_limit("acme", 100_000, actor="t")
    park(PauseStore(redis_client, clock=clock), "acme", [1], reason="org_limit")
    shares = [0.95, 0.80, 0.50]
    probes: list[float] = []

    def probe(tenant: str) -> float:
        probes.append(clock.now)
        return shares.pop(0)

    resumer, sent = make(redis_client, clock, probe=probe, probe_interval_seconds=60, org_resume_share=0.75)
    for _ in range(5):
        assert resumer.tick() == []  # within the first interval: no probe at all
    clock.advance(60)
    assert resumer.tick() == []  # 95%
    assert resumer.tick() == []  # too soon to probe again
    clock.advance(60)
    assert resumer.tick() == []  # 80%: still above the resume share
    clock.advance(60)
    assert resumer.tick() == ["acme"]  # 50%
    assert probes == [T0 + 60, T0 + 120, T0 + 180]
    assert sent.jobs == [("j1", 0)]


def test_a_job_parked_after_the_resume_is_still_sent(redis_client: redis.Redis, clock: FakeClock) -> None:
    CreditBucket(redis_client, clock=clock).set_limit("acme", 100_000, actor="t")
    pauses = PauseStore(redis_client, clock=clock)
    park(pauses, "acme", [1])
    resumer, sent = make(redis_client, clock)
    assert resumer.tick() == ["acme"]
    # A worker that ran dry just before the resume parks its job afterwards, and pauses the tenant again.
    park(pauses, "acme", [2])
    assert resumer.tick() == ["acme"]
    assert [job for job, _ in sent.jobs] == ["j1", "j2"]


def test_resumer_lease_lets_one_process_work(redis_client: redis.Redis, clock: FakeClock) -> None:
    CreditBucket(redis_client, clock=clock).set_limit("acme", 100_000, actor="t")
    park(PauseStore(redis_client, clock=clock), "acme", [1, 2, 3])
    other = redis_client.lock(keys.RESUMER_LEASE, timeout=60)
    assert other.acquire(blocking=False)  # another worker process holds the lease
    resumer, sent = make(redis_client, clock)

    def run_three_ticks() -> None:
        stop = threading.Event()
        ticks = iter(range(2))

        def sleep(_: float) -> None:
            if next(ticks, None) is None:
                stop.set()

        resumer.run(stop, sleep=sleep)

    run_three_ticks()
    assert sent.jobs == []
    other.release()  # the other process died or stopped: this one takes over
    run_three_ticks()
    assert [job for job, _ in sent.jobs] == ["j1", "j2", "j3"]
    assert redis_client.get(keys.RESUMER_LEASE) is None  # released on stop
