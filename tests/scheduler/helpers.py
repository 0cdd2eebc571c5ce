"""Shared by the scheduler tests: what reached the Dramatiq queue, and a stand-in for workers finishing jobs."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, cast

import redis

from tests.conftest import FakeClock
from worker import keys
from worker.broker import NAMESPACE
from worker.enqueue import QUEUE
from worker.jobs.state import TERMINAL, JobStore
from worker.scheduling.schedules import ScheduleStore

QUEUE_KEY = f"{NAMESPACE}:{QUEUE}"
TENANTS = ("acme", "globex", "initech", "umbrella")
OBJECTS = ("Lead", "Contact", "Account")
MEMBERS = [f"{t}/{o}" for t in TENANTS for o in OBJECTS]


def schedule_all(client: redis.Redis, clock: FakeClock, interval: int = 60) -> None:
    """Schedule every one of ``MEMBERS`` at ``interval``, due at ``clock()``."""
    store = ScheduleStore(client, clock)
    for tenant in TENANTS:
        for sobject in OBJECTS:
            store.set(tenant, sobject, interval)


def queued_messages(client: redis.Redis) -> list[dict[str, Any]]:
    """Every message waiting in the crmsync queue, decoded (nothing consumes them in these tests)."""
    # One transaction: a scheduler enqueueing between two separate reads would make them disagree.
    pipe = client.pipeline(transaction=True)
    pipe.lrange(QUEUE_KEY, 0, -1)
    pipe.hvals(f"{QUEUE_KEY}.msgs")
    ids, bodies = cast(list[list[Any]], pipe.execute())
    assert len(ids) == len(bodies)
    return [json.loads(b) for b in bodies]


def pulls_by_member(client: redis.Redis) -> Counter[str]:
    """How many pull messages are queued per ``TENANT/OBJECT``."""
    messages = queued_messages(client)
    assert all(m["actor_name"] == "crmsync_pull" for m in messages)
    return Counter(f"{m['kwargs']['tenant']}/{m['kwargs']['sobject']}" for m in messages)


def finish_all_jobs(client: redis.Redis) -> int:
    """Mark every active pull done, as workers would: its object may then be pulled again. Returns how many."""
    store = JobStore(client)
    count = 0
    for key in client.scan_iter(f"{keys.PREFIX}{{*}}:active"):
        tenant = key.split("{", 1)[1].split("}", 1)[0]
        for job_id in client.hvals(key):
            record = store.get(tenant, job_id)
            if record is not None and record.state not in TERMINAL:
                store.set_state(tenant, job_id, "done")
                count += 1
    return count
