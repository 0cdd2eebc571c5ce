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


def park(pauses: PauseStore, tenant: str, seqs: list[int], reason: str = "quota_exhausted", *,
         essential: bool = False, scope: str = "all") -> None:
    for seq in seqs:
        kwargs = {"tenant": tenant, "sobject": "Lead", "job_id": f"j{seq}", "seq": seq}
        job = ParkedJob("crmsync_pull", kwargs | ({"priority": "essential"} if essential else {}))
        pauses.park(tenant, job, reason, "credits used up", scope)  # type: ignore[arg-type]


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

    def probe(tenant: str, essential: bool) -> float:
        assert not essential  # normal jobs have credits: the probe pays with one of theirs
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


def scope_of(pauses: PauseStore, tenant: str) -> str | None:
    state = pauses.get(tenant)
    return None if state is None else state.scope


def test_only_the_reserve_left_sends_essential_jobs_back_and_keeps_normal_ones_waiting(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=1_000)
    assert bucket.take("acme", 100_000, essential=True).granted  # the reserve is spent too
    pauses = PauseStore(redis_client, clock=clock)
    park(pauses, "acme", [1, 3], scope="normal")  # normal jobs that ran into the reserve
    park(pauses, "acme", [2], essential=True)  # an essential job that found nothing left: all jobs wait
    resumer, sent = make(redis_client, clock)
    assert resumer.tick() == []
    assert sent.jobs == []

    bucket.set_limit("acme", 100_500, actor="admin")  # 500 credits, all of them the reserve's
    assert resumer.tick() == []  # not resumed: normal jobs keep waiting
    assert sent.jobs == [("j2", 0)]
    assert scope_of(pauses, "acme") == "normal"
    assert (pauses.parked_count("acme"), pauses.essential_count("acme")) == (2, 0)
    for _ in range(3):
        assert resumer.tick() == []
    assert sent.jobs == [("j2", 0)]  # nothing sent again while nothing changes

    # The essential job spends the reserve and runs dry: it parks again, and all jobs wait again.
    assert bucket.take("acme", 500, essential=True).granted
    park(pauses, "acme", [2], essential=True)
    assert scope_of(pauses, "acme") == "all"
    for _ in range(3):
        assert resumer.tick() == []
    assert sent.jobs == [("j2", 0)]  # no credit left for it: not sent back only to park again

    bucket.set_limit("acme", 200_000, actor="admin")
    assert resumer.tick() == ["acme"]
    assert sent.jobs == [("j2", 0), ("j1", 0), ("j2", 100), ("j3", 200)]
    assert pauses.get("acme") is None
    assert [kind for kind, _, _ in resumer.notifier] == ["quota_restored"]  # type: ignore[attr-defined]


def test_a_pause_of_all_jobs_narrows_once_only_the_reserve_is_left(redis_client: redis.Redis,
                                                                    clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=1_000)
    assert bucket.take("acme", 99_500, essential=True).granted
    pauses = PauseStore(redis_client, clock=clock)
    park(pauses, "acme", [1])  # parked for another reason's pause, gone by now: the scope is all
    resumer, sent = make(redis_client, clock)
    assert resumer.tick() == []
    # Essential jobs queued from now on run at once instead of parking and waiting for a tick.
    assert scope_of(pauses, "acme") == "normal"
    assert sent.jobs == []
    assert pauses.parked_count("acme") == 1


def test_a_rolling_tenant_resumes_when_its_oldest_credits_come_back(redis_client: redis.Redis,
                                                                    clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", window="rolling")
    assert bucket.take("acme", 60_000).granted  # T0 starts an hour
    clock.advance(2 * 3600)
    assert bucket.take("acme", 40_000).granted
    park(PauseStore(redis_client, clock=clock), "acme", [1, 2])
    resumer, sent = make(redis_client, clock)
    clock.now = T0 + 25 * 3600 - 1  # a day after the first take: its credits are not back yet
    assert resumer.tick() == []
    clock.now = T0 + 25 * 3600  # nobody raised the limit: the first hour's credits are back
    assert resumer.tick() == ["acme"]
    assert [job for job, _ in sent.jobs] == ["j1", "j2"]


def test_a_rolling_tenant_gets_back_its_reserve_before_its_normal_credits(redis_client: redis.Redis,
                                                                          clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", window="rolling", reserve=50_000)
    assert bucket.take("acme", 100, essential=True).granted
    clock.advance(3600)
    assert bucket.take("acme", 99_900, essential=True).granted
    pauses = PauseStore(redis_client, clock=clock)
    park(pauses, "acme", [1])
    park(pauses, "acme", [2], essential=True)
    resumer, sent = make(redis_client, clock)
    clock.now = T0 + 25 * 3600  # 100 credits back: less than the reserve, so only essential jobs may go on
    assert resumer.tick() == []
    assert sent.jobs == [("j2", 0)]
    clock.now = T0 + 26 * 3600
    assert resumer.tick() == ["acme"]
    assert sent.jobs == [("j2", 0), ("j1", 0)]


def test_an_org_pause_probes_from_the_reserve_only_for_waiting_essential_jobs(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=1_000)
    assert bucket.take("acme", 99_000).granted  # only the reserve is left
    pauses = PauseStore(redis_client, clock=clock)
    park(pauses, "acme", [1], reason="org_limit")
    probes: list[bool] = []

    def probe(tenant: str, essential: bool) -> float:
        probes.append(essential)
        return 0.5

    resumer, sent = make(redis_client, clock, probe=probe, probe_interval_seconds=60)
    clock.advance(60)
    assert resumer.tick() == []
    assert probes == []  # only a normal job waits, and it could not run anyway
    park(pauses, "acme", [2], reason="org_limit", essential=True)
    clock.advance(60)
    assert resumer.tick() == ["acme"]
    assert probes == [True]
    assert [job for job, _ in sent.jobs] == ["j1", "j2"]
