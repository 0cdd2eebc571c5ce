"""The credit bucket on a real Redis Cluster: takes, refunds, configs and audit in both window modes, tenants
spread over every master, and the declared-keys retry."""

from __future__ import annotations

import pytest
import redis

from quota import CreditBucket
from quota.windows import DAILY_ENDS, DAY
from tests.conftest import T0, FakeClock
from worker import keys
from worker.devstack.redis_cluster import LocalRedisCluster

TENANTS = [f"t{i}" for i in range(24)]


@pytest.fixture
def bucket(cluster_client: redis.RedisCluster, redis_cluster: LocalRedisCluster) -> CreditBucket:
    return CreditBucket.from_url(redis_cluster.url, clock=FakeClock())


def test_tenants_on_every_master_take_refund_and_configure(bucket: CreditBucket,
                                                           redis_cluster: LocalRedisCluster,
                                                           cluster_client: redis.RedisCluster) -> None:
    assert len({redis_cluster.master_of(keys.config(t)).port for t in TENANTS}) == 3
    for index, tenant in enumerate(TENANTS):
        window = "rolling" if index % 2 else "daily"
        bucket.set_limit(tenant, 100_000, actor="ops", window=window, reserve=10)
        grants = [bucket.take(tenant, 1000) for _ in range(3)]
        assert all(g.granted for g in grants)
        assert bucket.refund(tenant, 500, grant=grants[0]) == 500
        status = bucket.status(tenant)
        assert (status.used, status.window, status.reserve) == (2500, window, 10)
        assert not bucket.take(tenant, 100_000 - 2500 - 9).granted  # the reserve stays
        assert bucket.take(tenant, 100_000 - 2500, essential=True).granted
        assert [e.field for e in bucket.history(tenant)] == ["window", "reserve", "limit"] if window == "rolling" \
            else ["reserve", "limit"]
    assert bucket.tenants() == sorted(TENANTS)
    assert cluster_client.scard(keys.TENANTS) == len(TENANTS)


def test_a_wrong_counter_guess_is_retried_with_the_key_the_script_names(bucket: CreditBucket,
                                                                        cluster_client: redis.RedisCluster) -> None:
    bucket.set_limit("late", 100_000, actor="ops", reset_at="06:00")
    DAILY_ENDS.forget("late")
    grant = bucket.take("late", 7)  # guessed midnight; the script asks for 06:00
    assert grant.granted
    assert grant.window_end % DAY == 6 * 3600
    assert cluster_client.get(keys.daily_counter("late", grant.window_end)) == "7"
    midnight = T0 - T0 % DAY + DAY
    assert not cluster_client.exists(keys.daily_counter("late", midnight))
    assert DAILY_ENDS.guess("late", T0) == grant.window_end
