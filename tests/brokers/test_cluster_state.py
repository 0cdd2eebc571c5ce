"""The scale-out combination of issue 16: state on a real Redis Cluster, the broker on RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulator import EmulatorServer
from tests.brokers.conftest import purge_rabbitmq, sending_through
from tests.brokers.test_scenarios import _delivered, _wait_ended
from tests.faults.conftest import Pool, connect_tenant, worker_environment
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.enqueue import enqueue_pull

pytestmark = pytest.mark.slow


def test_a_pull_with_state_on_a_cluster_and_the_broker_on_rabbitmq(
    redis_cluster: LocalRedisCluster, rabbitmq_url: str, emulator: EmulatorServer,
    start_pool: Callable[..., Pool], secrets_dir: Path,
) -> None:
    redis_cluster.heal()
    redis_cluster.flush()
    client: Any = redis_cluster.client()  # the state's client: a RedisCluster where a Redis is typed
    tenant = connect_tenant(emulator, client, secrets_dir, records=4_500)
    pool = start_pool(worker_environment(redis_cluster.url, secrets_dir / "data", BROKER_URL=rabbitmq_url,
                                         CRMSYNC_BULK="never"))
    purge_rabbitmq(rabbitmq_url)
    with sending_through(rabbitmq_url, redis_cluster.url):
        job_id = enqueue_pull(client, tenant.name, "Lead")
    _wait_ended(tenant, job_id)
    assert (tenant.job(job_id).state, tenant.job(job_id).records) == ("done", 4_500)
    ids = _delivered(pool.data_dir, tenant)
    assert len(ids) == len(set(ids)) == 4_500
    assert tenant.used() == tenant.counted() == 3
