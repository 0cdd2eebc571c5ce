"""100,000 tenants: the /metrics scrape, ``crmsync status``'s page, and Redis memory per tenant.

A Redis of its own is filled with realistic state (``populate``): every tenant has quota config (one in ten
rolling, one in seven with a reserve) and credits taken in its window; four in five have org usage, one in
two Bulk API budgets, one in twenty is paused with three parked jobs. Then:

- the scrape: ``GET /metrics`` with gzip, as Prometheus scrapes, from a ``crmsync metrics`` process (tenant
  gauges only) after its first scrape (which learns each daily tenant's window), the best of three; with the CPU
  it cost that process and Redis. Against the reference of the same run: a raw pipelined read of the same keys
  (the meter script's read and ``HGETALL``/``HMGET`` of each key the gauges read, replies left as redis-py
  gives them, nothing rendered): the least any collector that reads Redis this way can cost;
- two instances, ``--shard 0/2`` and ``--shard 1/2``, scraped at once;
- the tenant gauges read (in process) from a Redis Cluster of 3 masters holding the same state;
- ``crmsync status`` (its default page of 50, sorted by share used), a fresh process as an admin runs it;
- memory: Redis's ``used_memory`` grown per tenant, for the mix above and for a tenant with only config and a
  window counter.

``python -m bench.scale_bench [TENANTS]`` (default 100,000).
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
import requests

from bench.common import row
from quota.bucket import meter_call
from quota.reading import needed_window
from quota.scripts import METER
from worker import keys
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.devstack.redis_server import EmbeddedRedis
from worker.metrics.collector import TenantCollector

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
TENANTS = 100_000
TARGET_S = 5.0
RUNS = 3
_BATCH = 2_000


def tenant_id(i: int) -> str:
    """The ``i``th tenant's id."""
    return f"tenant-{i:06d}"


def populate(client: redis.Redis, count: int, *, seed: int = 1, full: bool = True) -> None:
    """Write ``count`` tenants' state as a live system would leave it (``full``), or config and a window only."""
    rnd = random.Random(seed)
    client.execute_command("SCRIPT", "LOAD", METER.source)
    for start in range(0, count, _BATCH):
        takes: dict[str, int] = {}
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + _BATCH)):
            tenant = tenant_id(i)
            pipe.sadd(keys.TENANTS, tenant)
            config: dict[str, Any] = {"limit": rnd.choice((100_000, 250_000, 1_000_000, 5_000_000))}
            if i % 10 == 3:
                config["window"] = "rolling"
            if i % 7 == 1:
                config["reserve"] = 5_000
            if i % 4 == 2:
                config["reset_at"] = "06:30"
            pipe.hset(keys.config(tenant), mapping=config)
            takes[tenant] = rnd.randint(1, 90_000)
            if not full:
                continue
            if i % 20 == 5:
                pipe.sadd(keys.PAUSED, tenant)
                pipe.hset(keys.pause(tenant), mapping={"reason": "quota_exhausted", "since": f"{time.time():.6f}",
                                                       "detail": "credits used up", "scope": "all"})
                pipe.zadd(keys.parked(tenant), {f'{{"actor":"crmsync_pull","kwargs":{{"job_id":"j{j}"}}}}': j
                                                for j in range(3)})
            if i % 5:
                pipe.hset(keys.org_usage(tenant), mapping={"used": rnd.randint(0, 15_000), "max": 15_000,
                                                           "at": time.time()})
            if i % 2:
                pipe.hset(keys.bulk_budget(tenant), mapping={
                    "at": time.time(), "batches_remaining": 14_000, "batches_max": 15_000,
                    "query_jobs_remaining": 9_990, "query_jobs_max": 10_000,
                    "query_storage_mb_remaining": 1_000_000, "query_storage_mb_max": 1_048_576})
        pipe.execute()
        _take(client, takes)


def _take(client: redis.Redis, takes: dict[str, int]) -> None:
    """Take each tenant's credits through the metering script, pipelined; a take that declared another daily
    counter than the open window's (``needed_window``) is sent again declaring it."""
    ends: dict[str, int | None] = dict.fromkeys(takes)
    while ends:
        pipe = client.pipeline(transaction=False)
        for tenant, end in ends.items():
            pipe.execute_command(*METER.command(*meter_call(tenant, takes[tenant], "", grace=3600, counter_end=end)))
        asked = {tenant: needed_window(reply) for tenant, reply in zip(ends, pipe.execute(), strict=True)}
        ends = {tenant: end for tenant, end in asked.items() if end is not None}


def reference_read(client: redis.Redis, count: int, chunk: int = 1000) -> None:
    """The same keys the gauges read, pipelined ``chunk`` tenants a round trip, replies left as they come."""
    paused: set[bytes] = client.smembers(keys.PAUSED)  # type: ignore[assignment]  # sync client
    tenants = sorted(cast(set[bytes], client.smembers(keys.TENANTS)))
    for start in range(0, count, chunk):
        pipe = client.pipeline(transaction=False)
        execute: Any = pipe.execute_command
        for member in tenants[start:start + chunk]:
            tenant = member.decode()
            execute(*METER.command(*meter_call(tenant, 0, "")))
            execute("HMGET", keys.org_usage(tenant), "used", "max")
            execute("HGETALL", keys.bulk_budget(tenant))
            if member in paused:
                execute("HGETALL", keys.pause(tenant))
                execute("ZCARD", keys.parked(tenant))
                execute("ZCARD", keys.parked_essential(tenant))
        pipe.execute()


def best(action: Callable[[], object], runs: int = RUNS) -> float:
    """The fastest of ``runs`` timed calls, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def _redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def memory_per_tenant(count: int, full: bool) -> float:
    """Bytes of Redis memory per tenant, from ``used_memory`` before and after writing ``count`` tenants."""
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        before = _used_memory(client)
        populate(client, count, full=full)
        grown = _used_memory(client) - before
        client.close()
    return grown / count


@contextlib.contextmanager
def metrics_process(url: str, *args: str) -> Iterator[tuple[str, int]]:
    """``crmsync metrics --port 0 ARGS`` on ``url`` (tenant gauges only), as deployed: its URL and pid."""
    env = {**os.environ, "REDIS_URL": url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([CRMSYNC, "metrics", "--port", "0", *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "serving http://127.0.0.1:PORT/metrics (...)"
        if not line.startswith("serving "):
            raise RuntimeError(f"crmsync metrics did not start: {line!r}")
        yield line.split()[1], process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def fetch(url: str) -> int:
    """GET ``url`` as Prometheus does (gzip accepted); the compressed bytes received, not decompressed here."""
    response = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=120, stream=True)
    response.raise_for_status()
    return len(response.raw.read(decode_content=False))


@dataclass
class Scrape:
    """A scrape's wall time and what it cost the metrics process and Redis in CPU, each the best of its runs."""

    wall: float
    cpu: float
    redis_cpu: float
    size: int


def scrape_figures(client: redis.Redis, urls: list[str], pids: list[int]) -> Scrape:
    """Scrape every URL at once (one thread each), ``RUNS`` times; the best run's figures."""
    best_run: Scrape | None = None
    for _ in range(RUNS):
        cpu, redis_cpu = sum(_process_cpu(p) for p in pids), _redis_cpu(client)
        started = time.perf_counter()
        with ThreadPoolExecutor(len(urls)) as pool:
            sizes = list(pool.map(fetch, urls))
        run = Scrape(time.perf_counter() - started, sum(_process_cpu(p) for p in pids) - cpu,
                     _redis_cpu(client) - redis_cpu, sum(sizes))
        best_run = run if best_run is None or run.wall < best_run.wall else best_run
    assert best_run is not None
    return best_run


def status_seconds(url: str) -> float:
    """The median wall time of ``crmsync status`` (a fresh process, its default page) over ``RUNS`` runs."""
    env = {**os.environ, "REDIS_URL": url}
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([CRMSYNC, "status"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, timeout=300)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cluster_scrape(count: int) -> Scrape:
    """The tenant gauges read in process from a Redis Cluster of 3 masters holding the same state; best of
    ``RUNS`` after a first read."""
    with LocalRedisCluster(masters=3, replicas=0) as cluster:
        client = cluster.client()
        populate(cast(redis.Redis, client), count)
        nodes = [redis.Redis.from_url(node.url) for node in cluster.masters()]
        collector = TenantCollector(client)
        collector.scrape()
        best_run: Scrape | None = None
        for _ in range(RUNS):
            redis_cpu, cpu, started = sum(_redis_cpu(n) for n in nodes), time.process_time(), time.perf_counter()
            scraped = collector.scrape()
            assert (scraped.success, scraped.tenants) == (1, count)
            run = Scrape(time.perf_counter() - started, time.process_time() - cpu,
                         sum(_redis_cpu(n) for n in nodes) - redis_cpu, 0)
            best_run = run if best_run is None or run.wall < best_run.wall else best_run
        for node in nodes:
            node.close()
        client.close()
    assert best_run is not None
    return best_run


def main(count: int = TENANTS) -> None:
    """Print the scrape, status and memory figures at ``count`` tenants."""
    print(f"{count:,} tenants (config, window counters, 1 in 20 paused with parked jobs, org usage, Bulk budgets); "
          f"best of {RUNS}")
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        populate(client, count)
        redis_cpu = _redis_cpu(client)
        started = time.process_time()
        reference = best(lambda: reference_read(client, count))
        reference_cpu = (time.process_time() - started) / RUNS
        reference_redis = (_redis_cpu(client) - redis_cpu) / RUNS
        with metrics_process(server.url) as (url, pid):
            fetch(url)  # the first scrape learns each daily tenant's window (later ones declare it right)
            one = scrape_figures(client, [url], [pid])
        with metrics_process(server.url, "--shard", "0/2") as first, \
                metrics_process(server.url, "--shard", "1/2") as second:
            for url in (first[0], second[0]):
                fetch(url)
            two = scrape_figures(client, [first[0], second[0]], [first[1], second[1]])
        status = status_seconds(server.url)
        client.close()
    cluster = cluster_scrape(count)
    verdict = "ok" if one.wall <= TARGET_S else "ABOVE TARGET"
    row("reference: raw pipelined read of the same keys", f"{reference:.2f} s",
        f"1.00 (CPU: this process {reference_cpu:.2f} s, Redis {reference_redis:.2f} s)")
    row("GET /metrics, gzip, one crmsync metrics", f"{one.wall:.2f} s",
        f"{one.wall / reference:.2f}x reference; target <= {TARGET_S:.0f} s: {verdict}")
    row("  its CPU: metrics process / Redis", f"{one.cpu:.2f} / {one.redis_cpu:.2f} s",
        f"{one.size / 1e6:.1f} MB gzipped")
    row("GET /metrics of --shard 0/2 and 1/2 at once", f"{two.wall:.2f} s",
        f"{two.wall / reference:.2f}x reference; CPU: both metrics processes {two.cpu:.2f} s, Redis "
        f"{two.redis_cpu:.2f} s ({os.cpu_count()} cores)")
    row("tenant gauges read from a 3-master Redis Cluster", f"{cluster.wall:.2f} s",
        f"{cluster.wall / reference:.2f}x reference; CPU: this process {cluster.cpu:.2f} s, the masters "
        f"{cluster.redis_cpu:.2f} s (TenantCollector.scrape, in process)")
    row("crmsync status (default page of 50, by share)", f"{status:.2f} s",
        f"{status / reference:.2f}x reference; a fresh process, median")
    sample = count
    row("Redis memory per tenant, mix above", f"{memory_per_tenant(sample, True):,.0f} B",
        f"used_memory grown / {sample:,} tenants")
    row("Redis memory per tenant, config + window only", f"{memory_per_tenant(sample, False):,.0f} B",
        f"used_memory grown / {sample:,} tenants")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else TENANTS)
