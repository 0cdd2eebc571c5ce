"""REDIS_URL's forms (``quota.connection``) and the topology check, on real servers: each bad configuration is
one line and exit 2 from ``crmsync quota show`` and ``crmsync worker``, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from quota import CreditBucket, RedisConfigError, RedisTopologyError, RedisUrlError
from quota.connection import check_topology, connect, connect_checked, is_cluster_url, redact_url
from tests.conftest import wait_until
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.devstack.redis_server import EmbeddedRedis


@pytest.fixture(scope="module")
def half_cluster() -> Iterator[EmbeddedRedis]:
    """A one-node cluster serving only slots 0-9999: state fail, 6,384 slots unserved."""
    with EmbeddedRedis(config={"cluster-enabled": "yes", "cluster-config-file": "nodes.conf"}) as node:
        client = redis.Redis(host="127.0.0.1", port=node.port)
        client.execute_command("CLUSTER", "ADDSLOTS", *range(10000))
        client.close()
        yield node


def _run(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    # BROKER_URL (the single node, set by conftest.py) stays: a cluster REDIS_URL requires one.
    env = {**os.environ, "REDIS_URL": url}
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]


def test_url_forms() -> None:
    assert is_cluster_url("redis+cluster://h:1/")
    assert is_cluster_url("rediss+cluster://u:p@h:1,h:2")
    assert not is_cluster_url("redis://h:1/0")
    assert not is_cluster_url("unix:///tmp/redis.sock")
    assert redact_url("redis+cluster://app:s3cret@h:1,h:2/") == "redis+cluster://app:***@h:1,h:2/"
    assert redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    with pytest.raises(RedisUrlError, match="only database 0"):
        connect("redis+cluster://127.0.0.1:1/3")
    with pytest.raises(RedisUrlError, match="host:port"):
        connect("redis+cluster://127.0.0.1:1,,/")
    with pytest.raises(RedisUrlError, match="expected redis://"):
        connect("http://127.0.0.1:1/")


def test_a_cluster_url_gives_a_cluster_client_seeded_from_every_host(redis_cluster: LocalRedisCluster) -> None:
    client = connect_checked(redis_cluster.url, decode_responses=True)
    assert isinstance(client, redis.RedisCluster)
    assert {n.port for n in client.get_primaries()} == {m.port for m in redis_cluster.masters()}
    client.close()
    # Any one seed is enough, with the password form accepted (the cluster has none: default user).
    port = redis_cluster.nodes[-1].port
    assert isinstance(connect(f"redis+cluster://default:@127.0.0.1:{port}/"), redis.RedisCluster)


def test_a_single_node_url_on_a_cluster_node_is_refused(redis_cluster: LocalRedisCluster) -> None:
    url = f"redis://127.0.0.1:{redis_cluster.nodes[0].port}/0"
    with pytest.raises(RedisTopologyError, match="one node of a Redis Cluster"):
        connect_checked(url)
    for args in (("quota", "show", "acme"), ("worker", "--processes", "1")):
        _one_line_exit_2(_run(*args, url=url), "one node of a Redis Cluster", "redis+cluster://")


def test_a_cluster_url_on_a_single_node_is_refused(single_node_url: str) -> None:
    port = redis.Redis.from_url(single_node_url).connection_pool.connection_kwargs["port"]
    url = f"redis+cluster://127.0.0.1:{port}/"
    with pytest.raises(RedisTopologyError, match="not in cluster mode"):
        CreditBucket.from_url(url)
    for args in (("quota", "show", "acme"), ("worker", "--processes", "1")):
        _one_line_exit_2(_run(*args, url=url), "not in cluster mode")


def test_credentials_redis_refuses_are_one_line_without_the_password(single_node_url: str,
                                                                     redis_cluster: LocalRedisCluster) -> None:
    port = redis.Redis.from_url(single_node_url).connection_pool.connection_kwargs["port"]
    for url in (f"redis+cluster://:hunter2@127.0.0.1:{redis_cluster.nodes[0].port}/",
                f"redis://app:hunter2@127.0.0.1:{port}/0"):
        with pytest.raises(RedisConfigError, match="refused the URL's user or password"):
            connect_checked(url)
        done = _run("quota", "show", "acme", url=url)
        _one_line_exit_2(done, "refused the URL's user or password")
        assert "hunter2" not in done.stderr


def test_a_cluster_with_slots_unserved_is_refused(half_cluster: EmbeddedRedis) -> None:
    url = f"redis+cluster://127.0.0.1:{half_cluster.port}/"
    with pytest.raises(RedisTopologyError, match="does not serve every slot"):
        connect(url)
    for args in (("quota", "show", "acme"), ("worker", "--processes", "1")):
        _one_line_exit_2(_run(*args, url=url), "does not serve every slot")


def test_a_cluster_whose_state_is_not_ok_is_given_time_then_refused() -> None:
    # No replicas: a dead master's slots stay assigned to it, and the cluster's state turns to fail.
    with LocalRedisCluster(masters=3, replicas=0) as cluster:
        client = connect(cluster.url)
        check_topology(client, cluster.url, settle_s=0)  # settled: passes
        client.close()
        first = cluster.nodes[0]
        first.kill()
        waits: list[float] = []
        ticks = iter(range(100))
        wait_until(lambda: "cluster_state:fail" in str(
            redis.Redis(port=cluster.nodes[1].port, decode_responses=True).execute_command("CLUSTER", "INFO")),
                   30, "the cluster to see its master fail")
        client = connect(cluster.url)  # the dead seed is listed first: the others answer
        with pytest.raises(RedisTopologyError, match="state is 'fail'"):
            check_topology(client, cluster.url, settle_s=1.0, sleep=waits.append, clock=lambda: next(ticks) * 0.3)
        assert waits  # it waited (on the injected clock) before giving up
        client.close()
        with pytest.raises(RedisTopologyError, match="state is 'fail'"):
            connect_checked(cluster.url.replace(f"127.0.0.1:{first.port},", ""))


def test_metrics_and_the_scheduler_refuse_a_single_node_url_on_a_cluster_node(
        redis_cluster: LocalRedisCluster) -> None:
    url = f"redis://127.0.0.1:{redis_cluster.nodes[0].port}/0"
    for args in (("metrics", "--port", "0"), ("scheduler", "--tick", "1"), ("status",)):
        _one_line_exit_2(_run(*args, url=url), "one node of a Redis Cluster")
