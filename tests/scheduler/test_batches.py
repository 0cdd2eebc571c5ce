"""A tick in batches: round trips per batch not per entry, paused tenants at no cost each, the lease lost
mid-pass, a scheduler dying mid-batch (its claimed entries come back), and enqueue_pulls' own guarantees."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from quota.scripts import LuaScript
from tests.conftest import T0, FakeClock
from tests.scheduler.counting import CountingRedis
from tests.scheduler.helpers import finish_all_jobs, pulls_by_member, queued_messages
from worker import broker, keys
from worker.enqueue import PullRequest, Queued, active_pull, enqueue_pulls
from worker.jobs.parking import PauseStore
from worker.jobs.state import JobStore
from worker.scheduling import tick as tick_module
from worker.scheduling.scheduler import Scheduler
from worker.scheduling.schedules import ScheduleStore

OBJECTS = ("Lead", "Contact", "Account")
LEASE_TTL = 30


def members(tenants: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{n:03d}/{o}" for n in range(tenants) for o in OBJECTS]


def schedule(client: redis.Redis, names: list[str], interval: int = 60) -> None:
    """Schedule ``names`` (due at T0) the fast way: what ``ScheduleStore.set`` writes, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hset(keys.SCHEDULES, name, str(interval))
        pipe.zadd(keys.SCHEDULE_DUE, {name: T0})
    pipe.execute()


def scheduler(client: redis.Redis, clock: FakeClock, name: str = "a", batch: int = 1000) -> Scheduler:
    return Scheduler(client, instance_id=name, clock=clock, tick_s=1, lease_ttl_s=LEASE_TTL, batch=batch)


@pytest.fixture
def counting(redis_url: str, redis_client: redis.Redis) -> Iterator[CountingRedis]:
    """A counting client on a server that has the scripts loaded (a running scheduler loads them once)."""
    for script in (tick_module.RENEW, tick_module.CLAIM, LuaScript("pull_record", package="worker")):
        redis_client.script_load(script.source)
    broker.current()  # built before counting: the broker has its own client, its batch is one round trip
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def test_a_tick_queues_every_due_entry_a_batch_at_a_time(redis_client: redis.Redis, clock: FakeClock) -> None:
    names = members(9)  # 27 entries, 9 tenants
    schedule(redis_client, names)
    report = scheduler(redis_client, clock, batch=4).tick()

    assert report.batches == 7  # 6 full pages and a short one
    assert sorted(report.enqueued) == sorted(names)
    assert pulls_by_member(redis_client) == dict.fromkeys(names, 1)
    jobs = JobStore(redis_client)
    for name, job_id in report.enqueued.items():
        tenant, sobject = name.split("/")
        assert active_pull(redis_client, tenant, sobject) == job_id
        record = jobs.get(tenant, job_id)
        assert record is not None
        assert (record.kind, record.sobject, record.state, record.priority) == ("pull", sobject, "queued", "normal")
        assert redis_client.zscore(keys.SCHEDULE_DUE, name) == T0 + 60
        assert 0 < redis_client.ttl(keys.job(tenant, job_id)) <= 7 * 86_400
    seqs = Counter((m["kwargs"]["tenant"], m["kwargs"]["seq"]) for m in queued_messages(redis_client))
    assert max(seqs.values()) == 1  # each tenant's pulls have distinct places in its line
    assert scheduler(redis_client, clock, batch=4).tick().claimed == []  # all moved on: nothing due


def test_round_trips_grow_with_batches_not_entries(counting: CountingRedis, redis_client: redis.Redis,
                                                   clock: FakeClock) -> None:
    schedule(redis_client, members(100))  # 300 entries
    report = scheduler(counting, clock, batch=1000).tick()
    assert len(report.enqueued) == 300
    assert report.batches == 1
    # Taking the lease (2), the sweep (2), the paused index, the page, the schedules, the claim, the active
    # pulls, the sequence numbers, the lease again, the records, the settle: 13 for 300 entries (the old tick
    # made several per entry).
    assert counting.counter["round_trips"] == 13, counting.counter

    counting.counter.clear()
    finish_all_jobs(redis_client)
    clock.advance(60)
    report = scheduler(counting, clock, batch=100).tick()
    assert len(report.enqueued) == 300
    assert report.batches == 3
    assert counting.counter["round_trips"] <= 4 + 3 * 10, counting.counter


@pytest.mark.parametrize("paused_tenants", [10, 90])
def test_paused_tenants_cost_no_round_trip_each(counting: CountingRedis, redis_client: redis.Redis,
                                                clock: FakeClock, paused_tenants: int) -> None:
    names = members(100)
    schedule(redis_client, names)
    pauses = PauseStore(redis_client, clock)
    paused = {f"t{n:03d}" for n in range(paused_tenants)}
    for tenant in paused:
        pauses.pause(tenant, "quota_exhausted", "used 100000 of 100000")
    sched = scheduler(counting, clock)
    held = [n for n in names if n.split("/")[0] in paused]

    for _ in range(3):  # the same every tick while they stay paused
        counting.counter.clear()
        report = sched.tick()
        assert sorted(report.paused) == sorted(held)
        # A fixed number of round trips, however many tenants are paused (10 or 90 of 100)...
        assert counting.counter["round_trips"] <= 14, counting.counter
        # ...and each paused tenant's pause is read once per tick, not once per entry.
        assert counting.counter["HGETALL"] == paused_tenants
        assert counting.counter["SMEMBERS"] == 1
        for name in held:
            assert redis_client.zscore(keys.SCHEDULE_DUE, name) == T0  # left due
        finish_all_jobs(redis_client)
        clock.advance(60)
    assert sum(pulls_by_member(redis_client).values()) == 3 * (len(names) - len(held))

    for tenant in paused:
        pauses.unpause(tenant)
    report = sched.tick()
    assert set(held) <= set(report.enqueued)  # queued on the first tick after the resume
    assert report.paused == []


def test_an_essential_schedule_in_a_batch_goes_through_a_pause_of_normal_jobs(redis_client: redis.Redis,
                                                                               clock: FakeClock) -> None:
    store = ScheduleStore(redis_client, clock)
    for tenant in ("acme", "globex"):
        store.set(tenant, "Lead", 60, "essential")
        store.set(tenant, "Contact", 60)
    pauses = PauseStore(redis_client, clock)
    pauses.pause("acme", "quota_exhausted", "only the reserve is left")
    pauses.narrow("acme", "quota_exhausted")
    report = scheduler(redis_client, clock, batch=2).tick()
    assert report.paused == ["acme/Contact"]
    assert sorted(report.enqueued) == ["acme/Lead", "globex/Contact", "globex/Lead"]
    priorities = {f"{m['kwargs']['tenant']}/{m['kwargs']['sobject']}": m["kwargs"].get("priority", "normal")
                  for m in queued_messages(redis_client)}
    assert priorities == {"acme/Lead": "essential", "globex/Lead": "essential", "globex/Contact": "normal"}


class LeaseThief(Scheduler):
    """A scheduler whose lease is taken by ``b`` on its ``steal_at``-th renewal."""

    steal_at = 0
    renewals = 0

    def renew_lease(self) -> bool:
        self.renewals += 1
        if self.renewals == self.steal_at:
            self.redis.delete(keys.SCHEDULER_LEASE)
            self.redis.set(keys.SCHEDULER_LEASE, "b")
        return super().renew_lease()


def test_a_lease_lost_before_a_batch_is_sent_stops_the_pass_and_hands_the_batch_back(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    names = members(4)  # 12 entries, pages of 4
    schedule(redis_client, names)
    a = LeaseThief(redis_client, instance_id="a", clock=clock, tick_s=1, lease_ttl_s=LEASE_TTL, batch=4)
    a.steal_at = 3  # renewals: taking the lease, before sending batch 1, before sending batch 2 (lost)
    report = a.tick()
    assert report.lost_lease
    assert report.batches == 2
    assert len(report.enqueued) == 4
    first = set(report.enqueued)
    assert pulls_by_member(redis_client) == dict.fromkeys(first, 1)
    for name in set(names) - first:  # batch 2 handed back at once, batch 3 never touched
        assert redis_client.zscore(keys.SCHEDULE_DUE, name) == T0
    tenant, sobject = sorted(set(names) - first)[0].split("/")
    assert active_pull(redis_client, tenant, sobject) is None

    redis_client.delete(keys.SCHEDULER_LEASE)  # b's lease ran out; a second instance takes over
    report = scheduler(redis_client, clock, "c", batch=4).tick()
    assert sorted(report.enqueued) == sorted(set(names) - first)
    assert pulls_by_member(redis_client) == dict.fromkeys(names, 1)


def test_a_lease_lost_between_batches_stops_the_pass(redis_client: redis.Redis, clock: FakeClock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    names = members(4)
    schedule(redis_client, names)
    settle = tick_module.TickPass._settle

    def settle_then_lose(self: tick_module.TickPass, done: Any, back: Any) -> None:
        settle(self, done, back)
        redis_client.set(keys.SCHEDULER_LEASE, "b")  # the page read renews the lease next: refused

    monkeypatch.setattr(tick_module.TickPass, "_settle", settle_then_lose)
    report = scheduler(redis_client, clock, batch=4).tick()
    assert report.lost_lease
    assert len(report.enqueued) == 4
    assert sum(redis_client.zscore(keys.SCHEDULE_DUE, n) == T0 for n in names) == 8  # the rest untouched
    assert sum(pulls_by_member(redis_client).values()) == 4


class Crash(BaseException):
    """The process dies here: nothing after it runs (not even the hand-back of an ``except Exception``)."""


@pytest.mark.parametrize("point", ["claimed", "sent", "recorded"])
def test_a_scheduler_dying_mid_batch_loses_no_entry(redis_client: redis.Redis, clock: FakeClock,
                                                     monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """It dies after claiming batch 2 (nothing sent), after sending it (nothing recorded) or after recording it
    (nothing moved on): those entries come back when their hold ends and every one gets its pull."""
    names = members(4)
    schedule(redis_client, names)
    batches = 0

    def crash_on_second(*args: Any) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise Crash

    if point == "claimed":
        check = tick_module.TickPass._check_lease

        def crash_then_check(self: tick_module.TickPass) -> None:
            crash_on_second()
            check(self)

        monkeypatch.setattr(tick_module.TickPass, "_check_lease", crash_then_check)
    elif point == "sent":
        send_many = broker.send_many

        def send_then_crash(*args: Any) -> None:
            send_many(*args)
            crash_on_second()

        monkeypatch.setattr(broker, "send_many", send_then_crash)
    else:
        settle = tick_module.TickPass._settle

        def crash_then_settle(self: tick_module.TickPass, *args: Any) -> None:
            crash_on_second()
            settle(self, *args)

        monkeypatch.setattr(tick_module.TickPass, "_settle", crash_then_settle)
    with pytest.raises(Crash):
        scheduler(redis_client, clock, batch=4).tick()
    monkeypatch.undo()
    held = [n for n in names if redis_client.zscore(keys.SCHEDULE_DUE, n) == T0 + LEASE_TTL]
    assert len(held) == 4  # batch 2, claimed: held for a lease TTL, not lost, not queued twice meanwhile

    untouched = [n for n in names if redis_client.zscore(keys.SCHEDULE_DUE, n) == T0]
    assert len(untouched) == 4  # batch 3, never read (batch 1 is queued and due again at T0 + 60)

    redis_client.delete(keys.SCHEDULER_LEASE)  # the dead instance's lease runs out
    b = scheduler(redis_client, clock, "b", batch=4)
    assert sorted(b.tick().claimed) == sorted(untouched)  # the held entries wait for their hold to end
    clock.advance(LEASE_TTL)
    report = b.tick()
    assert sorted(report.claimed) == sorted(held)  # back once the hold ended
    if point == "sent":
        assert set(report.enqueued) == set(held)  # sent but never recorded: queued again (a pull runs twice)
    else:
        assert set(report.active if point == "recorded" else report.enqueued) == set(held)
    per_member = pulls_by_member(redis_client)
    assert set(per_member) == set(names)
    assert all(n == (2 if point == "sent" and name in held else 1) for name, n in per_member.items())
    sent = {m["kwargs"]["job_id"] for m in queued_messages(redis_client)}
    for name in names:  # every object's active pull is one whose message was sent
        tenant, sobject = name.split("/")
        assert active_pull(redis_client, tenant, sobject) in sent
        assert redis_client.zscore(keys.SCHEDULE_DUE, name) > clock()


def test_enqueue_pulls_one_pull_per_object_and_priority(redis_client: redis.Redis) -> None:
    existing = enqueue_pulls(redis_client, [PullRequest("acme", "Lead")])[0]
    assert isinstance(existing, Queued)
    assert existing.new
    outcomes = enqueue_pulls(redis_client, [
        PullRequest("acme", "LEAD"),  # the pull under way serves it
        PullRequest("acme", "Lead", "essential"),  # a normal pull does not serve an essential one
        PullRequest("acme", "lead", "essential"),  # the essential one just queued does
        PullRequest("globex", "My_Thing__c"), PullRequest("globex", "my_thing__c"),  # one object, one pull
    ])
    assert all(isinstance(o, Queued) for o in outcomes)
    ids = [o.job_id for o in outcomes if isinstance(o, Queued)]
    assert ids[0] == existing.job_id
    assert ids[1] == ids[2] != ids[0]
    assert ids[3] == ids[4]
    assert [o.new for o in outcomes if isinstance(o, Queued)] == [False, True, False, True, False]
    assert len(queued_messages(redis_client)) == 3


def test_enqueue_pulls_fails_only_the_tenant_redis_refused(redis_client: redis.Redis) -> None:
    redis_client.set(keys.active_pulls("acme"), "not a hash")
    outcomes = enqueue_pulls(redis_client, [PullRequest("acme", "Lead"), PullRequest("globex", "Lead")])
    assert isinstance(outcomes[0], redis.ResponseError)
    assert isinstance(outcomes[1], Queued)
    assert pulls_by_member(redis_client) == {"globex/Lead": 1}


def test_a_pull_a_worker_took_before_its_record_was_written_keeps_its_state(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message goes before the record: a worker fast enough to start (or finish) the job first keeps its
    state, and a finished pull does not stand as its object's active pull."""
    send_many = broker.send_many
    jobs = JobStore(redis_client)

    def send_and_work(queue: str, batch: list[tuple[str, dict[str, Any]]]) -> None:
        send_many(queue, batch)
        for _, kwargs in batch:
            state = "running" if kwargs["sobject"] == "Lead" else "done"
            jobs.set_state(kwargs["tenant"], kwargs["job_id"], state)  # type: ignore[arg-type]

    monkeypatch.setattr(broker, "send_many", send_and_work)
    lead, contact = enqueue_pulls(redis_client, [PullRequest("acme", "Lead"), PullRequest("acme", "Contact")])
    assert isinstance(lead, Queued)
    assert isinstance(contact, Queued)
    lead_record, contact_record = jobs.get("acme", lead.job_id), jobs.get("acme", contact.job_id)
    assert lead_record is not None
    assert contact_record is not None
    assert (lead_record.state, lead_record.kind, lead_record.sobject) == ("running", "pull", "Lead")
    assert contact_record.state == "done"
    assert active_pull(redis_client, "acme", "Lead") == lead.job_id
    assert active_pull(redis_client, "acme", "Contact") is None
