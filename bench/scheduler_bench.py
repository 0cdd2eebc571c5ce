"""The scheduler at scale: due pulls queued per second by one tick, and what a tick costs with nothing due.

A Redis of its own holds N schedules (three objects per tenant, every 15 minutes), all due at once: the burst
after an outage, or the moment N schedules set together come due. One ``Scheduler.tick()`` queues them on the
Dramatiq Redis broker on the same server (job record, active pull, sequence number, message), timed from the
first command to the last. Cases: 30,000 due, the same with one tenant in five paused (their entries stay due
and are skipped), 300,000 due; then an idle tick over 300,000 schedules none of which is due (what every tick
costs in steady state). Each tick runs in a fresh process (spawn), so the broker is built on this Redis and
nothing is warm but what a running scheduler would have warm.

Printed against the target (5,000 due pulls a second: 300,000 schedules every 15 minutes need 333/s steady
and a burst of 300,000 after an outage) and against two references measured in the same run on the same
server right after each tick: ``enqueue_pull`` called once per entry for 3,000 other pulls (the core of the old
tick, which also renewed the lease, read the pause and claimed each entry, a round trip each), and raw
pipelined ``ZADD`` of the same members in pages of 1,000 (the cheapest write per entry there is).

``python -m bench.scheduler_bench [N]`` (default: 30,000 and 300,000).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from typing import Any

import redis

from bench.common import row
from worker import keys
from worker.devstack.redis_server import EmbeddedRedis

TARGET_PER_S = 5_000
T0 = 1_795_953_600.0
OBJECTS = ("Lead", "Contact", "Account")
INTERVAL_S = 900
PAGE = 1000
PER_ENTRY_SAMPLE = 3_000


def member(n: int) -> str:
    return f"tenant{n // len(OBJECTS):06d}/{OBJECTS[n % len(OBJECTS)]}"


def populate(client: redis.Redis, count: int, due: float, paused_share: float = 0.0) -> set[str]:
    """``count`` schedules due at ``due``, written as ``ScheduleStore.set`` writes them; pause every tenant whose
    number falls in the first ``paused_share`` of each hundred. Returns the paused tenants."""
    paused: set[str] = set()
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        name = member(n)
        pipe.hset(keys.SCHEDULES, name, str(INTERVAL_S))
        pipe.zadd(keys.SCHEDULE_DUE, {name: due})
        tenant = name.partition("/")[0]
        if n % len(OBJECTS) == 0 and (n // len(OBJECTS)) % 100 < paused_share * 100:
            paused.add(tenant)
            pipe.sadd(keys.PAUSED, tenant)
            pipe.hset(keys.pause(tenant), mapping={"reason": "quota_exhausted", "since": "0", "detail": "bench",
                                                   "scope": "all"})
        if len(pipe) >= 5 * PAGE:
            pipe.execute()
    pipe.execute()
    return paused


def _tick(url: str, now: float) -> dict[str, Any]:
    """In a fresh process: one tick at ``now``, timed; what it did."""
    os.environ["REDIS_URL"] = url
    os.environ.pop("BROKER_URL", None)
    from worker import broker  # noqa: PLC0415 (after REDIS_URL: the broker is built from the environment)
    from worker.scheduling.scheduler import Scheduler  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    broker.current()
    sched = Scheduler(client, instance_id="bench", clock=lambda: now, lease_ttl_s=120)
    started = time.perf_counter()
    report = sched.tick()
    seconds = time.perf_counter() - started
    client.close()
    return {"seconds": seconds, "enqueued": len(report.enqueued), "paused": len(report.paused),
            "failed": len(report.failed), "batches": report.batches}


def _per_entry(url: str, count: int) -> float:
    """In a fresh process: ``enqueue_pull`` once per entry for ``count`` entries; pulls a second."""
    os.environ["REDIS_URL"] = url
    from worker import broker  # noqa: PLC0415
    from worker.enqueue import enqueue_pull  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    broker.current()
    started = time.perf_counter()
    for n in range(count):
        tenant, sobject = member(n).split("/")
        enqueue_pull(client, f"solo{tenant}", sobject)
    return count / (time.perf_counter() - started)


def _in_process(function: Any, *args: Any) -> Any:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def raw_zadd_per_s(client: redis.Redis, count: int) -> float:
    """Members a second written by pipelined ``ZADD`` in pages of 1,000 (a scratch key, deleted after)."""
    scratch = f"{keys.PREFIX}bench:zadd"
    started = time.perf_counter()
    for first in range(0, count, PAGE):
        pipe = client.pipeline(transaction=False)
        pipe.zadd(scratch, {member(n): T0 for n in range(first, min(count, first + PAGE))})
        pipe.execute()
    seconds = time.perf_counter() - started
    client.delete(scratch)
    return count / seconds


def burst(count: int, paused_share: float = 0.0) -> tuple[dict[str, Any], float, float]:
    """One tick over ``count`` due schedules on a fresh server; its figures, then the references measured on
    the same server right after it: raw ZADD, and ``enqueue_pull`` once per entry (other tenants)."""
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        populate(client, count, T0, paused_share)
        result = _in_process(_tick, server.url, T0 + 1)
        queued = client.llen(f"{keys.PREFIX}broker:crmsync")
        if queued != result["enqueued"]:
            raise RuntimeError(f"the tick reported {result['enqueued']} pulls but {queued} messages are queued")
        reference = raw_zadd_per_s(client, count)
        solo: float = _in_process(_per_entry, server.url, PER_ENTRY_SAMPLE)
        client.close()
    return result, reference, solo


def idle_tick_ms(count: int) -> float:
    """Milliseconds of a tick over ``count`` schedules none of which is due (best of three)."""
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        populate(client, count, T0 + 3600)
        best = min(_in_process(_tick, server.url, T0)["seconds"] for _ in range(3))
        client.close()
    return float(best) * 1000


def report(label: str, result: dict[str, Any], reference: float, solo: float) -> None:
    """Print one burst's figures."""
    rate = result["enqueued"] / result["seconds"]
    verdict = "ok" if rate >= TARGET_PER_S else "BELOW TARGET"
    row(label, f"{rate:,.0f}/s", f"{rate / TARGET_PER_S:.2f}x target {TARGET_PER_S:,}/s: {verdict}; "
        f"{result['enqueued']:,} queued in {result['seconds']:.1f} s ({result['batches']} batches"
        + (f", {result['paused']:,} paused entries skipped" if result["paused"] else "") + ")")
    row("", "", f"{rate / solo:.1f}x enqueue_pull once per entry ({solo:,.0f}/s, {PER_ENTRY_SAMPLE:,} pulls); "
        f"{rate / reference:.3f} of raw pipelined ZADD ({reference:,.0f}/s)")


def main(sizes: tuple[int, ...] = (30_000, 300_000)) -> None:
    """Print the scheduler's figures for each size in ``sizes``."""
    print("scheduler: due pulls queued by one tick (batches of 1,000; broker on the same Redis; references on the "
          "same server right after each tick)")
    for count in sizes:
        report(f"one tick, {count:,} due", *burst(count))
        if count <= 30_000:
            report(f"one tick, {count:,} due, 1 tenant in 5 paused", *burst(count, paused_share=0.2))
    biggest = max(sizes)
    row(f"idle tick, {biggest:,} schedules, none due", f"{idle_tick_ms(biggest):.1f} ms",
        "the sweep's page and a page read: no schedule read per tick")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (30_000, 300_000))
