"""The scheduler on a real Redis Cluster (3 masters, a replica each): schedules, due entries and the lease are
global keys in three slots, each tenant's job records, active pulls and sequence in its own; the broker stays
on the single-node Redis (Dramatiq's Redis broker cannot run on a cluster)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import T0, FakeClock
from tests.scheduler.helpers import pulls_by_member, queued_messages
from worker import broker, keys
from worker.enqueue import active_pull
from worker.jobs.parking import PauseStore
from worker.jobs.state import JobStore
from worker.scheduling.scheduler import Scheduler
from worker.scheduling.schedules import ScheduleStore

TENANTS = [f"tenant{n:02d}" for n in range(40)]
OBJECTS = ("Lead", "Contact")
NAMES = [f"{t}/{o}" for t in TENANTS for o in OBJECTS]


def finish(cluster: redis.RedisCluster, report_jobs: dict[str, str]) -> None:
    jobs = JobStore(cluster)  # type: ignore[arg-type]
    for name, job_id in report_jobs.items():
        jobs.set_state(name.split("/")[0], job_id, "done")


def test_a_tick_on_a_cluster_queues_every_due_pull_once(cluster_client: redis.RedisCluster,
                                                        redis_client: redis.Redis, clock: FakeClock) -> None:
    # The tenants live on every master, and the global keys on more than one.
    assert len({key_slot(keys.active_pulls(t).encode()) for t in TENANTS}) == len(TENANTS)
    assert len({cluster_client.get_node_from_key(k).name for k in (keys.SCHEDULES, keys.SCHEDULE_DUE,
                                                                     keys.SCHEDULER_LEASE)}) > 1
    store = ScheduleStore(cluster_client, clock)
    for tenant in TENANTS:
        store.set(tenant, "Lead", 60, "essential" if tenant.endswith("7") else None)
        store.set(tenant, "Contact", 60)
    pauses = PauseStore(cluster_client, clock)  # type: ignore[arg-type]
    for tenant in TENANTS[:5]:
        pauses.pause(tenant, "quota_exhausted", "used 100000 of 100000")
    sched = Scheduler(cluster_client, instance_id="a", clock=clock, tick_s=1, lease_ttl_s=30, batch=16)
    standby = Scheduler(cluster_client, instance_id="b", clock=clock, tick_s=1, lease_ttl_s=30, batch=16)

    report = sched.tick()
    assert not standby.tick().leader
    held = {n for n in NAMES if n.split("/")[0] in TENANTS[:5]}
    assert report.batches == 5
    assert set(report.paused) == held
    assert set(report.enqueued) == set(NAMES) - held
    assert pulls_by_member(redis_client) == dict.fromkeys(set(NAMES) - held, 1)
    essential = {f"{m['kwargs']['tenant']}/{m['kwargs']['sobject']}" for m in queued_messages(redis_client)
                 if m["kwargs"].get("priority") == "essential"}
    assert essential == {f"{t}/Lead" for t in TENANTS[5:] if t.endswith("7")}
    for name, job_id in report.enqueued.items():
        tenant, sobject = name.split("/")
        assert active_pull(cluster_client, tenant, sobject) == job_id  # type: ignore[arg-type]
        assert cluster_client.zscore(keys.SCHEDULE_DUE, name) == T0 + 60
    for name in held:
        assert cluster_client.zscore(keys.SCHEDULE_DUE, name) == T0

    clock.advance(60)
    report2 = sched.tick()  # the pulls are still queued: each slot is served by its pull under way
    assert report2.active == report.enqueued
    finish(cluster_client, report.enqueued)
    for tenant in TENANTS[:5]:
        pauses.unpause(tenant)
    clock.advance(60)
    report3 = sched.tick()
    assert set(report3.enqueued) == set(NAMES)
    assert pulls_by_member(redis_client) == {n: 1 if n in held else 2 for n in NAMES}


def test_a_scheduler_dying_mid_batch_on_a_cluster_loses_nothing(
    cluster_client: redis.RedisCluster, redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ScheduleStore(cluster_client, clock)
    for name in NAMES:
        tenant, sobject = name.split("/")
        store.set(tenant, sobject, 60)
    send_many = broker.send_many

    class Crash(BaseException):
        pass

    def send_then_die(*args: Any) -> None:
        send_many(*args)
        raise Crash

    monkeypatch.setattr(broker, "send_many", send_then_die)
    with pytest.raises(Crash):
        Scheduler(cluster_client, instance_id="a", clock=clock, tick_s=1, lease_ttl_s=30, batch=16).tick()
    monkeypatch.undo()
    cluster_client.delete(keys.SCHEDULER_LEASE)
    b = Scheduler(cluster_client, instance_id="b", clock=clock, tick_s=1, lease_ttl_s=30, batch=16)
    first = b.tick()
    assert len(first.enqueued) == len(NAMES) - 16  # the first batch is held
    clock.advance(30)
    again = b.tick()
    assert len(again.enqueued) == 16  # sent, never recorded: queued again when the hold ends
    per_member = pulls_by_member(redis_client)
    assert set(per_member) == set(NAMES)
    assert sorted(per_member.values()) == [1] * (len(NAMES) - 16) + [2] * 16
