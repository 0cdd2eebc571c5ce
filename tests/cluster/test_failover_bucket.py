"""A master killed (SIGKILL) while threads take credits from tenants it serves: takes fail closed
(``QuotaUnavailable``) until its replica has taken over, then go on through the same bucket; what the failover
loses is measured: takes Redis acknowledged that never reached the replica (asynchronous replication)."""

from __future__ import annotations

import threading

import redis

from quota import CreditBucket, QuotaUnavailable
from tests.conftest import wait_until
from worker import keys
from worker.devstack.redis_cluster import LocalRedisCluster

THREADS = 4
# A bound well above what was measured (0 or 1 take in three runs: the replica trails its master by about a
# millisecond of writes); the README states this loss in words, not this number.
LOSS_BOUND = 500


def test_takes_fail_closed_during_a_failover_and_lose_only_the_unreplicated_tail(
        cluster_client: redis.RedisCluster, redis_cluster: LocalRedisCluster) -> None:
    bucket = CreditBucket.from_url(redis_cluster.url)
    victim_tenant = "acme"
    for tenant in ("acme", "globex"):
        bucket.set_limit(tenant, 10**12, actor="ops")
    other = "globex" if redis_cluster.master_of(keys.config("globex")) != redis_cluster.master_of(
        keys.config("acme")) else None
    granted = [0] * THREADS
    refused = [0] * THREADS
    stop = threading.Event()

    def taker(index: int) -> None:
        while not stop.is_set():
            try:
                if bucket.take(victim_tenant, 1).granted:
                    granted[index] += 1
            except QuotaUnavailable:
                refused[index] += 1

    threads = [threading.Thread(target=taker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(granted) > 2000, 60, "takes before the kill")
        redis_cluster.kill_master_of(keys.config(victim_tenant))
        before = sum(granted)
        wait_until(lambda: sum(granted) > before + 2000, 60, "takes through the promoted replica")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    used = bucket.status(victim_tenant).used
    lost = sum(granted) - used
    print(f"\nfailover: {sum(granted):,} takes granted, {used:,} counted after it, {lost} lost; "
          f"{sum(refused):,} refused (QuotaUnavailable) while no master served the slot")
    assert sum(refused) > 0  # the gap was seen, and failed closed
    # A take in flight at the kill may have run and replicated while its reply was lost (the thread saw
    # QuotaUnavailable): at most one per thread counted but not granted. The tail lost is small.
    assert -THREADS <= lost <= LOSS_BOUND
    if other is not None:
        assert bucket.take(other, 1).granted  # tenants on the other masters were never affected
    bucket.close()
