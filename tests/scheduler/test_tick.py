"""One scheduler pass at a time, with an injected clock: what gets queued, when it is next due, what is skipped."""

from __future__ import annotations

import threading

import pytest
import redis
from structlog.testing import capture_logs

from quota.errors import InvalidInput
from tests.conftest import T0, FakeClock
from tests.scheduler.helpers import finish_all_jobs, pulls_by_member, queued_messages
from worker import keys
from worker.enqueue import active_pull
from worker.jobs.parking import PauseStore
from worker.jobs.state import JobState, JobStore
from worker.scheduling.scheduler import Scheduler, next_due
from worker.scheduling.schedules import ScheduleStore


def scheduler(client: redis.Redis, clock: FakeClock, name: str = "a", **kwargs: object) -> Scheduler:
    return Scheduler(client, instance_id=name, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_next_due() -> None:
    assert next_due(100.0, 60, 100.0) == 160.0
    assert next_due(100.0, 60, 159.9) == 160.0  # a late tick keeps the rhythm
    assert next_due(100.0, 60, 160.0) == 220.0  # a whole slot missed: one pull now, the next a full interval on
    assert next_due(100.0, 60, 1000.0) == 1060.0


def test_tick_enqueues_a_due_pull_and_sets_the_next_due_time(redis_client: redis.Redis, clock: FakeClock) -> None:
    ScheduleStore(redis_client, clock).set("acme", "Lead", 900)
    clock.advance(7)
    report = scheduler(redis_client, clock).tick()

    assert report.leader
    job_id = report.enqueued["acme/Lead"]
    assert active_pull(redis_client, "acme", "Lead") == job_id
    record = JobStore(redis_client).get("acme", job_id)
    assert record is not None
    assert (record.kind, record.sobject, record.state) == ("pull", "Lead", "queued")
    [message] = queued_messages(redis_client)
    assert message["kwargs"]["job_id"] == job_id
    assert (message["kwargs"]["tenant"], message["kwargs"]["sobject"]) == ("acme", "Lead")
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == T0 + 900


def test_nothing_is_queued_before_the_due_time(redis_client: redis.Redis, clock: FakeClock) -> None:
    ScheduleStore(redis_client, clock).set("acme", "Lead", 900)
    sched = scheduler(redis_client, clock)
    sched.tick()
    finish_all_jobs(redis_client)
    clock.advance(899)
    report = sched.tick()
    assert report.leader
    assert report.claimed == []
    assert sum(pulls_by_member(redis_client).values()) == 1
    clock.advance(1)
    assert list(sched.tick().enqueued) == ["acme/Lead"]
    assert pulls_by_member(redis_client) == {"acme/Lead": 2}
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == T0 + 1800


def test_an_active_pull_is_not_queued_again(redis_client: redis.Redis, clock: FakeClock) -> None:
    ScheduleStore(redis_client, clock).set("acme", "Lead", 60)
    sched = scheduler(redis_client, clock)
    first = sched.tick().enqueued["acme/Lead"]
    states: tuple[JobState, ...] = ("queued", "running", "parked")
    for state in states:
        JobStore(redis_client).set_state("acme", first, state)
        clock.advance(60)
        report = sched.tick()
        assert report.enqueued == {}
        assert report.active == {"acme/Lead": first}  # the slot is served by the pull under way
    assert pulls_by_member(redis_client) == {"acme/Lead": 1}
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == T0 + 240

    JobStore(redis_client).set_state("acme", first, "done")
    clock.advance(60)
    second = sched.tick().enqueued["acme/Lead"]
    assert second != first
    assert pulls_by_member(redis_client) == {"acme/Lead": 2}


def test_a_long_outage_makes_one_pull_not_a_burst(redis_client: redis.Redis, clock: FakeClock) -> None:
    ScheduleStore(redis_client, clock).set("acme", "Lead", 60)
    clock.advance(3600 + 13)
    sched = scheduler(redis_client, clock)
    assert list(sched.tick().enqueued) == ["acme/Lead"]
    finish_all_jobs(redis_client)
    assert sched.tick().claimed == []
    assert pulls_by_member(redis_client) == {"acme/Lead": 1}
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == clock.now + 60


def test_a_paused_tenant_gets_no_job_and_stays_due(redis_client: redis.Redis, clock: FakeClock) -> None:
    store = ScheduleStore(redis_client, clock)
    store.set("acme", "Lead", 60)
    store.set("acme", "Contact", 60)
    store.set("globex", "Lead", 60)
    pauses = PauseStore(redis_client, clock)
    pauses.pause("acme", "quota_exhausted", "used 100000 of 100000")
    sched = scheduler(redis_client, clock)

    report = sched.tick()
    assert sorted(report.paused) == ["acme/Contact", "acme/Lead"]
    assert list(report.enqueued) == ["globex/Lead"]
    assert pulls_by_member(redis_client) == {"globex/Lead": 1}
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == T0  # left due, not skipped to a later slot

    clock.advance(600)
    finish_all_jobs(redis_client)
    assert sorted(sched.tick().paused) == ["acme/Contact", "acme/Lead"]
    pauses.unpause("acme")
    clock.advance(5)
    report = sched.tick()
    assert sorted(report.enqueued) == ["acme/Contact", "acme/Lead"]
    assert pulls_by_member(redis_client) == {"globex/Lead": 2, "acme/Lead": 1, "acme/Contact": 1}
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == clock.now + 60


def test_an_essential_schedule_goes_on_while_only_normal_jobs_are_paused(redis_client: redis.Redis,
                                                                         clock: FakeClock) -> None:
    store = ScheduleStore(redis_client, clock)
    store.set("acme", "Lead", 60, "essential")
    store.set("acme", "Contact", 60)
    pauses = PauseStore(redis_client, clock)
    pauses.pause("acme", "quota_exhausted", "only the reserve is left")
    pauses.narrow("acme", "quota_exhausted")
    sched = scheduler(redis_client, clock)

    report = sched.tick()
    assert report.paused == ["acme/Contact"]
    [message] = queued_messages(redis_client)
    assert message["kwargs"]["job_id"] == report.enqueued["acme/Lead"]
    assert message["kwargs"]["priority"] == "essential"

    # A normal pull of the same object under way does not count as the essential schedule's pull.
    finish_all_jobs(redis_client)
    pauses.unpause("acme")
    store.set("acme", "Lead", 60, "normal")
    clock.advance(60)
    normal = sched.tick().enqueued["acme/Lead"]
    store.set("acme", "Lead", 60, "essential")
    clock.advance(60)
    report = sched.tick()
    assert report.enqueued["acme/Lead"] != normal
    assert "acme/Lead" not in report.active

    # Every job waits: the essential schedule is skipped and stays due.
    pauses.pause("acme", "quota_exhausted", "no credits left")
    clock.advance(60)
    due = redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead")
    assert sorted(sched.tick().paused) == ["acme/Contact", "acme/Lead"]
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == due


def test_garbage_entries_are_skipped_and_logged_not_fatal(redis_client: redis.Redis, clock: FakeClock) -> None:
    ScheduleStore(redis_client, clock).set("acme", "Lead", 60)
    garbage = {"Bad Tenant/Lead": "60", "acme/Lead; DROP": "60", "noslash": "60", "acme/Contact": "abc",
               "acme/Account": "5", "acme/Case": ""}
    redis_client.hset(keys.SCHEDULES, mapping=garbage)
    redis_client.zadd(keys.SCHEDULE_DUE, dict.fromkeys(garbage, T0))
    redis_client.zadd(keys.SCHEDULE_DUE, {"acme/Opportunity": T0})  # due entry whose schedule is gone
    with capture_logs() as logs:
        sched = scheduler(redis_client, clock)
        report = sched.tick()
    assert list(report.enqueued) == ["acme/Lead"]
    assert sorted(report.invalid) == sorted([*garbage, "acme/Opportunity"])
    assert pulls_by_member(redis_client) == {"acme/Lead": 1}
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Opportunity") is None  # the orphan is tidied away
    for name in garbage:  # looked at again in a minute, not on every tick
        assert redis_client.zscore(keys.SCHEDULE_DUE, name) == T0 + 60
    assert sched.tick().invalid == []
    warned = {e["member"] for e in logs if e["event"] == "scheduler.invalid_entry"}
    assert warned == set(garbage)
    assert [e["member"] for e in logs if e["event"] == "scheduler.orphan_removed"] == ["acme/Opportunity"]


def test_a_schedule_missing_its_due_entry_is_repaired(redis_client: redis.Redis, clock: FakeClock) -> None:
    redis_client.hset(keys.SCHEDULES, "acme/Lead", "60")
    report = scheduler(redis_client, clock).tick()
    assert list(report.enqueued) == ["acme/Lead"]
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == T0 + 60


def test_a_failed_enqueue_hands_the_slot_back(redis_client: redis.Redis, clock: FakeClock) -> None:
    store = ScheduleStore(redis_client, clock)
    store.set("acme", "Lead", 60)
    store.set("globex", "Lead", 60)
    redis_client.hset(keys.sequence("acme"), "x", "1")  # wrong type: enqueue_pull's INCR fails for acme
    with capture_logs() as logs:
        report = scheduler(redis_client, clock).tick()
    assert [e["member"] for e in logs if e["event"] == "scheduler.enqueue_failed"] == ["acme/Lead"]
    assert report.failed == ["acme/Lead"]
    assert list(report.enqueued) == ["globex/Lead"]  # one tenant's failure does not stop the pass
    assert redis_client.zscore(keys.SCHEDULE_DUE, "acme/Lead") == T0  # still due: retried next tick
    assert redis_client.zscore(keys.SCHEDULE_DUE, "globex/Lead") == T0 + 60


def test_run_ticks_with_the_injected_sleep_and_releases_the_lease(redis_client: redis.Redis, clock: FakeClock) -> None:
    ScheduleStore(redis_client, clock).set("acme", "Lead", 60)
    stop = threading.Event()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        assert redis_client.get(keys.SCHEDULER_LEASE) == "a"  # held while running
        finish_all_jobs(redis_client)
        clock.advance(seconds)
        if len(sleeps) == 5:
            stop.set()

    scheduler(redis_client, clock, sleep=sleep, tick_s=60, lease_ttl_s=180).run(stop)
    assert sleeps == [60] * 5
    assert pulls_by_member(redis_client) == {"acme/Lead": 5}
    assert redis_client.get(keys.SCHEDULER_LEASE) is None


def test_run_survives_failing_ticks(redis_client: redis.Redis, clock: FakeClock) -> None:
    redis_client.set(keys.SCHEDULES, "not a hash")  # every Redis read of the schedules now fails
    stop = threading.Event()
    calls = 0

    def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        clock.advance(seconds)
        if calls == 3:
            redis_client.delete(keys.SCHEDULES)
            ScheduleStore(redis_client, clock).set("acme", "Lead", 60)
        if calls == 4:
            stop.set()

    with capture_logs() as logs:
        scheduler(redis_client, clock, sleep=sleep, tick_s=1, lease_ttl_s=10).run(stop)
    assert calls == 4
    assert [e["event"] for e in logs].count("scheduler.tick_failed") == 3
    assert pulls_by_member(redis_client) == {"acme/Lead": 1}


@pytest.mark.parametrize(("tick_s", "lease_ttl_s"), [(0, 30), (-1, 30), (5, 9.9)])
def test_lease_must_outlast_two_ticks(redis_client: redis.Redis, tick_s: float, lease_ttl_s: float) -> None:
    with pytest.raises(InvalidInput):
        Scheduler(redis_client, tick_s=tick_s, lease_ttl_s=lease_ttl_s)
