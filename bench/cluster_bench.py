"""Redis Cluster against one node: credit takes per second with the same client processes, and what a failover
loses.

- **Takes/s**: ``PROCESSES`` processes, each a ``CreditBucket`` taking one credit at a time from each of
  ``TENANTS`` tenants in turn (so the takes spread over every master), on a cluster of 3 masters with a replica each
  (``LocalRedisCluster``, as tests/cluster and the scale-out deployment run it), on the same 3 masters with no
  replica (what replication costs) and on one node with no replica; the best of interleaved rounds, printed as
  absolutes and as ratios to one node; and one process alone on each (a take's round trip).
- **Failover loss**: the same processes take as fast as they can from tenants of one master; the master is
  SIGKILLed; once its replica serves the slots, credits granted minus credits the replica holds is what the
  failover lost (takes acknowledged by the dead master that had not reached its replica: asynchronous
  replication). Each process stops at its first failed take, whose outcome is unknown (it may have run and been
  replicated), so a run's loss is known to within one take per process.
- **WAIT**: takes/s when every take is followed by ``WAIT 1 100`` (the master answers once its replica has
  the take), the price of closing that window per take.

On a machine with few cores the cluster's nodes share them with each other and with the clients: the ratio
then shows the cluster's overhead, not its scale (a cluster scales by giving each master its own cores).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from bench.common import row, throughput
from quota import CreditBucket, QuotaUnavailable, keys
from quota.connection import connect
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.devstack.redis_server import EmbeddedRedis

PROCESSES = 8
TENANTS = 3_000
ROUNDS = 3
LIMIT = 10**15
FAILOVERS = 3
LOAD_S = 2.0  # takes before each kill
WAIT_MS = 100


def _tenants(count: int = TENANTS) -> list[str]:
    return [f"bench-{i:05d}" for i in range(count)]


def _cycle(names: list[str]) -> Iterator[str]:
    while True:
        yield from names


def bucket_takes(url: str, wait: bool = False) -> Callable[[], Any]:
    """One process's take: ``CreditBucket.take`` over this process's share of the tenants (and ``WAIT``)."""
    bucket = CreditBucket.from_url(url)
    tenants = _tenants()
    first = random.randrange(len(tenants))  # each process its own place in the round, over every master
    names = _cycle(tenants[first:] + tenants[:first])
    if not wait:
        return lambda: bucket.take(next(names), 1)

    def take_and_wait() -> None:
        bucket.take(next(names), 1)
        # The take's own connection, so the WAIT is on the master that ran it (a keyless command goes to the
        # node this thread used last): what crmsync would send if it waited for a replica after each take.
        bucket._direct.execute("WAIT", 1, WAIT_MS)
    return take_and_wait


def _set_limits(url: str, tenants: list[str]) -> None:
    client = connect(url)
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        pipe.hset(keys.config(tenant), mapping={"limit": str(LIMIT)})
    pipe.execute()
    client.close()


def _take_until_failure(url: str, tenants: list[str], start: Any, out: Any) -> None:
    """Take from ``tenants`` until the first take fails; report the credits granted to each."""
    bucket = CreditBucket.from_url(url)
    granted = dict.fromkeys(tenants, 0)
    names = _cycle(tenants)
    start.wait()
    while True:
        tenant = next(names)
        try:
            if bucket.take(tenant, 1).granted:
                granted[tenant] += 1
        except QuotaUnavailable:
            break
    out.put(granted)


def failover_loss(cluster: LocalRedisCluster) -> tuple[int, int, float]:
    """One failover under full load: (credits granted, credits lost, seconds until the replica served)."""
    victim = cluster.master_of(keys.config(_tenants()[0]))
    mine = [t for t in _tenants() if cluster.master_of(keys.config(t)).port == victim.port][:PROCESSES * 8]
    bucket = CreditBucket.from_url(cluster.url)
    before = sum(bucket.status(t).used for t in mine)  # the takes of the throughput runs and earlier failovers
    bucket.close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES + 1)
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_take_until_failure, args=(cluster.url, mine[i::PROCESSES], start, out))
             for i in range(PROCESSES)]
    for proc in procs:
        proc.start()
    start.wait()
    time.sleep(LOAD_S)  # a bench's fixed load period: the takes it measures
    killed = time.monotonic()
    cluster.kill_master_of(keys.config(mine[0]))
    failover_s = time.monotonic() - killed
    granted: dict[str, int] = {}
    for _ in procs:
        granted.update(out.get(timeout=120))
    for proc in procs:
        proc.join()
    bucket = CreditBucket.from_url(cluster.url)
    held = sum(bucket.status(t).used for t in mine) - before
    bucket.close()
    cluster.restart(victim)  # back as the new master's replica, for the next run
    return sum(granted.values()), sum(granted.values()) - held, failover_s


def main() -> None:
    """Print takes/s on the cluster and on one node, the ratio, the failover loss and WAIT's cost."""
    cores = os.cpu_count() or 1
    with LocalRedisCluster(masters=3, replicas=1) as cluster, EmbeddedRedis() as node, \
            LocalRedisCluster(masters=3, replicas=0) as bare:
        urls = {"cluster": cluster.url, "bare": bare.url, "node": node.url}
        for url in urls.values():
            _set_limits(url, _tenants())
        version = redis.Redis.from_url(node.url).info("server")["redis_version"]
        print(f"Redis Cluster against one node (Redis {version}; {PROCESSES} client processes, {TENANTS:,} tenants; "
              f"{cores} cores here)")
        best: dict[str, float] = {}
        for _ in range(ROUNDS):
            # Best of interleaved rounds: a shared machine is noisy, and interleaving exposes all to it alike.
            for name, url in urls.items():
                best[name] = max(best.get(name, 0.0), throughput(bucket_takes, (url,), PROCESSES))
            for name in ("node", "cluster"):  # one process: a take's round trip, client path included
                best[f"{name}1"] = max(best.get(f"{name}1", 0.0), throughput(bucket_takes, (urls[name],), 1))
        row("CreditBucket.take, one node, 1 process", f"{best['node1']:,.0f}/s")
        row("CreditBucket.take, cluster, 1 process", f"{best['cluster1']:,.0f}/s",
            f"{best['cluster1'] / best['node1']:.2f}x one node")
        row(f"CreditBucket.take, one node, {PROCESSES} processes", f"{best['node']:,.0f}/s")
        row("CreditBucket.take, 3 masters, no replica", f"{best['bare']:,.0f}/s",
            f"{best['bare'] / best['node']:.2f}x one node")
        row("CreditBucket.take, 3 masters + 3 replicas", f"{best['cluster']:,.0f}/s",
            f"{best['cluster'] / best['node']:.2f}x one node")
        if cores < 8:
            print(f"  ({cores} cores: the cluster's 6 servers and the {PROCESSES} clients share them, so the ratio is "
                  "the cluster's overhead, not its scale; each master needs cores of its own to add throughput)")
        waited = throughput(bucket_takes, (cluster.url, True), PROCESSES)
        row(f"take + WAIT 1 {WAIT_MS} (cluster)", f"{waited:,.0f}/s",
            f"{waited / best['cluster']:.2f}x the take alone")
        for run in range(1, FAILOVERS + 1):
            granted, lost, failover_s = failover_loss(cluster)
            row(f"failover {run}: credits lost / granted", f"{lost} / {granted:,}",
                f"replica served after {failover_s:.1f}s (node timeout 1 s); within one take per process")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
