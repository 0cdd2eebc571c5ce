"""Tests under tests/cluster run on the session's Redis Cluster: ``redis_client`` is the cluster (healed and
empty), ``redis_url`` and ``REDIS_URL`` its ``redis+cluster://`` URL (so processes the tests start use it too),
and ``BROKER_URL`` the session's single node (Dramatiq's Redis broker cannot run on a cluster). The state test
modules re-exported in ``test_state_suites.py`` run unchanged against it."""

from __future__ import annotations

import os

import pytest
import redis

from worker.devstack.redis_cluster import LocalRedisCluster


@pytest.fixture(scope="session")
def single_node_url() -> str:
    """The session's single Redis node (the broker's, here)."""
    return os.environ["REDIS_URL"] if not os.environ["REDIS_URL"].startswith("redis+") else os.environ["BROKER_URL"]


@pytest.fixture
def redis_url(redis_cluster: LocalRedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture(autouse=True)
def _cluster_environment(redis_cluster: LocalRedisCluster, single_node_url: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_URL", single_node_url)
    monkeypatch.setenv("REDIS_URL", redis_cluster.url)


@pytest.fixture
def redis_client(cluster_client: redis.RedisCluster) -> redis.RedisCluster:
    """The cluster, healed and empty (``cluster_client``), in place of the single node."""
    return cluster_client
