"""The lease and the per-entry claim: one enqueuer at a time, takeover on expiry, never a double pull."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import redis

from tests.conftest import FakeClock
from tests.scheduler.helpers import MEMBERS, finish_all_jobs, pulls_by_member, queued_messages, schedule_all
from worker import keys
from worker.scheduling.scheduler import Scheduler, TickReport


def instance(client: redis.Redis, clock: FakeClock, name: str) -> Scheduler:
    return Scheduler(client, instance_id=name, clock=clock, tick_s=1, lease_ttl_s=30)


def test_only_one_instance_holds_the_lease(redis_client: redis.Redis, clock: FakeClock) -> None:
    a, b = instance(redis_client, clock, "a"), instance(redis_client, clock, "b")
    assert a.hold_lease()
    assert not b.hold_lease()
    assert a.hold_lease()  # renewal
    assert redis_client.get(keys.SCHEDULER_LEASE) == "a"
    assert 20_000 < redis_client.pttl(keys.SCHEDULER_LEASE) <= 30_000


def test_renewal_extends_only_the_holders_lease(redis_client: redis.Redis, clock: FakeClock) -> None:
    a, b = instance(redis_client, clock, "a"), instance(redis_client, clock, "b")
    assert a.hold_lease()
    redis_client.pexpire(keys.SCHEDULER_LEASE, 5_000)
    assert not b.renew_lease()
    assert redis_client.pttl(keys.SCHEDULER_LEASE) <= 5_000
    assert a.renew_lease()
    assert redis_client.pttl(keys.SCHEDULER_LEASE) > 20_000


def test_release_never_drops_another_instances_lease(redis_client: redis.Redis, clock: FakeClock) -> None:
    a, b = instance(redis_client, clock, "a"), instance(redis_client, clock, "b")
    assert a.hold_lease()
    assert not b.release()
    assert redis_client.get(keys.SCHEDULER_LEASE) == "a"
    assert a.release()
    assert redis_client.get(keys.SCHEDULER_LEASE) is None
    assert b.hold_lease()  # handed over at once, no waiting for expiry


def test_the_standby_enqueues_nothing_and_takes_over_when_the_lease_expires(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    schedule_all(redis_client, clock)
    a, b = instance(redis_client, clock, "a"), instance(redis_client, clock, "b")
    assert set(a.tick().enqueued) == set(MEMBERS)
    finish_all_jobs(redis_client)
    clock.advance(60)
    standby = b.tick()
    assert not standby.leader
    assert standby.claimed == []

    redis_client.delete(keys.SCHEDULER_LEASE)  # a dies: its lease runs out
    report = b.tick()
    assert report.leader
    assert set(report.enqueued) == set(MEMBERS)
    assert redis_client.get(keys.SCHEDULER_LEASE) == "b"
    assert not a.tick().leader  # a comes back as the standby
    assert pulls_by_member(redis_client) == dict.fromkeys(MEMBERS, 2)


def test_a_stalled_holder_cannot_claim_what_its_successor_took(redis_client: redis.Redis, clock: FakeClock) -> None:
    schedule_all(redis_client, clock)
    a, b = instance(redis_client, clock, "a"), instance(redis_client, clock, "b")
    assert a.hold_lease()
    read_by_a = a.due(clock())  # a reads the due entries, then stalls past its lease
    assert {e.member for e in read_by_a} == set(MEMBERS)

    redis_client.pexpire(keys.SCHEDULER_LEASE, 1)
    redis_client.delete(keys.SCHEDULER_LEASE)
    assert set(b.tick().enqueued) == set(MEMBERS)
    assert [e.member for e in read_by_a if a.claim(e, clock() + 60)] == []  # every claim of a's is refused
    assert not a.tick().leader
    assert pulls_by_member(redis_client) == dict.fromkeys(MEMBERS, 1)


def test_concurrent_claims_of_the_same_entries_succeed_once_each(
    redis_url: str, redis_client: redis.Redis, clock: FakeClock
) -> None:
    schedule_all(redis_client, clock)
    entries = instance(redis_client, clock, "reader").due(clock())
    assert len(entries) == len(MEMBERS)
    schedulers = [instance(redis.Redis.from_url(redis_url), clock, f"s{i}") for i in range(8)]
    barrier = threading.Barrier(len(schedulers))

    def claim_all(s: Scheduler) -> list[str]:
        barrier.wait()
        return [e.member for e in entries if s.claim(e, e.due + 60)]

    with ThreadPoolExecutor(len(schedulers)) as pool:
        won = [m for claimed in pool.map(claim_all, schedulers) for m in claimed]
    assert Counter(won) == Counter(MEMBERS)


def test_two_instances_ticking_concurrently_never_double_enqueue(
    redis_url: str, redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Both instances tick at once every round; the lease is taken away before some rounds and during others."""
    schedule_all(redis_client, clock)
    rounds = 40
    mid_round_losses = set(range(3, rounds, 5))
    pre_round_losses = set(range(1, rounds, 4)) - mid_round_losses
    instances = [instance(redis.Redis.from_url(redis_url, decode_responses=True), clock, n) for n in ("a", "b")]
    start, done = threading.Barrier(3), threading.Barrier(3)
    reports: dict[str, list[TickReport]] = {"a": [], "b": []}

    def loop(s: Scheduler) -> None:
        for _ in range(rounds):
            start.wait()
            reports[s.instance_id].append(s.tick())
            done.wait()

    threads = [threading.Thread(target=loop, args=(s,)) for s in instances]
    for t in threads:
        t.start()
    for r in range(rounds):
        if r in pre_round_losses:
            redis_client.delete(keys.SCHEDULER_LEASE)
        start.wait()
        if r in mid_round_losses:
            redis_client.delete(keys.SCHEDULER_LEASE)
        done.wait()
        finish_all_jobs(redis_client)  # workers finish each round's pulls, so the next round may queue again
        clock.advance(60)
    for t in threads:
        t.join(timeout=30)

    for r in range(rounds):
        claims = Counter(m for name in reports for m in reports[name][r].claimed)
        assert max(claims.values(), default=0) <= 1, f"round {r}: {claims}"
        if r not in mid_round_losses:
            assert sum(reports[name][r].leader for name in reports) == 1
    enqueued = [job for name in reports for rep in reports[name] for job in rep.enqueued.values()]
    messages = queued_messages(redis_client)
    assert sorted(m["kwargs"]["job_id"] for m in messages) == sorted(enqueued)
    assert len(set(enqueued)) == len(enqueued)
    per_member = pulls_by_member(redis_client)
    assert set(per_member) == set(MEMBERS)
    # A lease lost mid-pass may delay an entry to the next round (one slot coalesced), never duplicate it.
    assert all(rounds - len(mid_round_losses) <= n <= rounds for n in per_member.values()), per_member
