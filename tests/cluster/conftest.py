"""Tests under tests/cluster run on the session's Redis Cluster: ``redis_client`` is the cluster (healed and
empty), ``redis_url`` and ``REDIS_URL`` its ``redis+cluster://`` URL (so processes the tests start use it too),
and ``BROKER_URL`` the session's single node (Dramatiq's Redis broker cannot run on a cluster); tests/e2e's
worker pools and tenants use them. The state test
modules re-exported in ``test_state_suites.py`` run unchanged against it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import redis

from emulator import EmulatorServer
from tests.e2e import conftest as e2e
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.jobs import runtime


@pytest.fixture(scope="session")
def single_node_url() -> str:
    """The session's single Redis node (the broker's, here)."""
    return os.environ["REDIS_URL"] if not os.environ["REDIS_URL"].startswith("redis+") else os.environ["BROKER_URL"]


@pytest.fixture(scope="session")
def redis_url(redis_cluster: LocalRedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture(scope="module")
def worker_env(redis_url: str, single_node_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """tests/e2e's worker environment, with the state on the cluster and the broker on the single node (its
    fixture's own function, called with the cluster's URL)."""
    return {**e2e.worker_env._fixture_function(redis_url, tmp_path_factory), "BROKER_URL": single_node_url}


@pytest.fixture
def make_tenant(emulator: EmulatorServer, redis_url: str, tmp_path: Path) -> Any:
    """tests/e2e's tenants, written through a cluster client."""
    return e2e.make_tenant._fixture_function(emulator, redis_url, tmp_path)


@pytest.fixture(autouse=True)
def _cluster_environment(redis_cluster: LocalRedisCluster, single_node_url: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_URL", single_node_url)
    monkeypatch.setenv("REDIS_URL", redis_cluster.url)
    # Jobs run in this process (the state suites' stub workers) build the process runtime from REDIS_URL once:
    # a cluster test gets its own, and the tests after it get back whatever they had (a single-node one).
    monkeypatch.setattr(runtime, "_runtime", None)


@pytest.fixture
def redis_client(cluster_client: redis.RedisCluster) -> redis.RedisCluster:
    """The cluster, healed and empty (``cluster_client``), in place of the single node."""
    return cluster_client
