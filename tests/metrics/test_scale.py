"""The tenant gauges at scale: shards that split the tenants between instances, the exposition formats and
compression Prometheus asks for, and the same gauges read from a Redis Cluster."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
import redis
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from redis.crc import key_slot

from quota import CreditBucket
from tests.conftest import FakeClock, wait_until
from tests.metrics.budgets import limits, store_budgets
from tests.metrics.conftest import ROOT, Serve, http_scrape, run_proc, samples, value
from worker import keys
from worker.cli import main
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.eviction import eviction_warning
from worker.jobs.parking import ParkedJob, PauseStore
from worker.metrics.collector import TENANT_GAUGES, TenantCollector
from worker.metrics.reads import Shard
from worker.metrics.server import build_registry, scrape

TENANTS = 60


def _fill(client: redis.Redis | redis.RedisCluster, clock: FakeClock, count: int = TENANTS) -> list[str]:
    """``count`` tenants with varied state: limits, credits used, a reset time, rolling windows, a reserve,
    pauses with parked jobs, org usage and Bulk budgets."""
    bucket = CreditBucket(client, clock=clock)
    store = PauseStore(cast(redis.Redis, client), clock=clock)  # a cluster takes the same one-slot commands
    tenants = [f"t{i:03d}" for i in range(count)]
    for i, tenant in enumerate(tenants):
        bucket.set_limit(tenant, 100_000 + i, actor="test", reset_at="06:30" if i % 4 == 1 else None,
                         window="rolling" if i % 5 == 2 else None, reserve=1_000 if i % 3 == 0 else None)
        bucket.take(tenant, 10 * i + 1)
        if i % 6 == 0:
            job = ParkedJob("crmsync_pull", {"tenant": tenant, "sobject": "Lead", "job_id": f"j{i}", "seq": 1})
            store.park(tenant, job, "quota_exhausted", "credits used up")
        if i % 2 == 0:
            client.hset(keys.org_usage(tenant), mapping={"used": i, "max": 15_000, "at": clock()})
        if i % 3 == 1:
            store_budgets(cast(redis.Redis, client), tenant, limits(), at=clock())
    bucket.close()
    return tenants


def _tenant_samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample of a tenant family: (name, labels, value)."""
    return {(name, tuple(sorted(labels.items())), v)
            for name in TENANT_GAUGES for labels, v in samples(text, name)}


def test_every_tenant_in_exactly_one_shard_and_per_redis_series_once(redis_client: redis.Redis, clock: FakeClock,
                                                                     serve_registry: Serve) -> None:
    tenants = _fill(redis_client, clock)
    PauseStore(redis_client, clock=clock).pause("noconfig", "auth_failed", "token refused")  # paused index only
    whole = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))
    parts = [http_scrape(serve_registry(build_registry(redis_client, None, clock=clock, shard=Shard(i, 3))))
             for i in range(3)]

    owners: dict[str, list[int]] = {}
    for index, part in enumerate(parts):
        for labels, _ in samples(part, "crmsync_tenant_paused"):
            owners.setdefault(labels["tenant"], []).append(index)
    assert set(owners) == {*tenants, "noconfig"}
    assert all(len(where) == 1 for where in owners.values()), owners  # each tenant in exactly one shard
    assert all(0 < len(samples(part, "crmsync_tenant_paused")) < TENANTS for part in parts)  # each holds some
    assert owners == {t: [Shard.parse(f"{i}/3").index] for t, [i] in owners.items()}
    assert all(Shard(i, 3).holds(t) for t, [i] in owners.items())
    # Together the shards say exactly what one instance says, tenant by tenant.
    assert set().union(*(_tenant_samples(part) for part in parts)) == _tenant_samples(whole)
    assert sum(value(part, "crmsync_tenants") or 0 for part in parts) == value(whole, "crmsync_tenants") == 61
    assert [value(part, "crmsync_tenant_scrape_success") for part in parts] == [1, 1, 1]
    # What is one per Redis comes from shard 0 only, so a sum over instances counts it once.
    policies = [samples(part, "crmsync_redis_maxmemory_policy_info") for part in parts]
    assert [len(p) for p in policies] == [1, 0, 0]
    assert policies[0] == samples(whole, "crmsync_redis_maxmemory_policy_info")


def test_shards_do_not_depend_on_what_else_is_in_redis() -> None:
    # The same id lands in the same shard whatever the other tenants are: a hash of the id alone.
    assert [Shard(i, 4).holds("acme") for i in range(4)].count(True) == 1
    assert Shard.parse("2/4") == Shard(2, 4)
    assert str(Shard(2, 4)) == "2/4"
    assert Shard().holds("anything")
    assert Shard().first
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0", ""):
        with pytest.raises(ValueError, match="I/N"):
            Shard.parse(bad)


@pytest.mark.parametrize("argv", [["--shard", "3/3"], ["--shard", "x"], ["--shard", "0/2", "--no-tenants"],
                                  ["--shard", "1/2", "--multiproc-dir", "/tmp/crmsync-test-prom"]])
def test_crmsync_metrics_refuses_a_bad_shard(redis_url: str, argv: list[str]) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, "-m", "worker.cli.metrics", "--port", "0", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--shard" in done.stderr
    assert "Traceback" not in done.stderr


def test_openmetrics_gzip_and_some_families_only(redis_client: redis.Redis, clock: FakeClock,
                                                 serve_registry: Serve) -> None:
    _fill(redis_client, clock, 5)
    server = serve_registry(build_registry(redis_client, None, clock=clock))
    plain = http_scrape(server)

    asked = requests.get(server.url, timeout=10, headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "gzip"})
    asked.raise_for_status()
    assert asked.headers["Content-Type"].startswith("application/openmetrics-text")
    assert asked.headers["Content-Encoding"] == "gzip"  # requests undid it: the body is the text
    assert asked.text.endswith("# EOF\n")
    assert asked.text.count("# EOF") == 1
    parsed = {f.name: f for f in openmetrics_families(asked.text)}  # a strict parser: fails on any flaw
    assert {s.labels["tenant"] for s in parsed["crmsync_quota_used"].samples} == {f"t{i:03d}" for i in range(5)}
    assert parsed["crmsync_quota_used"].type == "gauge"
    assert parsed["crmsync_tenants"].samples[0].value == 5

    raw = requests.get(server.url, timeout=10, headers={"Accept-Encoding": "gzip"}, stream=True)
    compressed = raw.raw.read()
    assert gzip.decompress(compressed).decode().count("\ncrmsync_quota_used{") == 5
    assert _tenant_samples(gzip.decompress(compressed).decode()) == _tenant_samples(plain)

    some = requests.get(server.url, params=[("name[]", "crmsync_quota_used"), ("name[]", "crmsync_tenants")],
                        timeout=10).text
    assert {line.split("{")[0].split(" ")[0] for line in some.splitlines() if not line.startswith("#")} == {
        "crmsync_quota_used", "crmsync_tenants"}


def test_the_same_gauges_from_a_redis_cluster(redis_cluster: LocalRedisCluster,
                                              cluster_client: redis.RedisCluster, clock: FakeClock,
                                              serve_registry: Serve, redis_client: redis.Redis) -> None:
    tenants = _fill(cluster_client, clock)
    masters = {redis_cluster.master_of(keys.config(t)).port for t in tenants}
    assert len(masters) == 3  # the tenants really are spread over every master
    on_cluster = http_scrape(serve_registry(build_registry(cluster_client, None, clock=clock)))
    _fill(redis_client, clock)  # the same state on one Redis
    on_one = http_scrape(serve_registry(build_registry(redis_client, None, clock=clock)))

    assert value(on_cluster, "crmsync_tenant_scrape_success") == 1
    assert value(on_cluster, "crmsync_tenant_scrape_errors") == 0
    assert value(on_cluster, "crmsync_tenants") == TENANTS
    assert _tenant_samples(on_cluster) == _tenant_samples(on_one)
    bucket = CreditBucket(cluster_client, clock=clock)
    assert value(on_cluster, "crmsync_quota_used", tenant="t059") == bucket.status("t059").used == 591
    assert value(on_cluster, "crmsync_parked_jobs", tenant="t054") == 1

    # Sharded over the cluster too: each tenant once.
    parts = [scrape(build_registry(cluster_client, None, clock=clock, shard=Shard(i, 2))) for i in range(2)]
    assert set().union(*(_tenant_samples(p) for p in parts)) == _tenant_samples(on_cluster)
    assert sum(value(p, "crmsync_tenants") or 0 for p in parts) == TENANTS


def test_scrapes_follow_a_cluster_failover(redis_cluster: LocalRedisCluster, cluster_client: redis.RedisCluster,
                                           clock: FakeClock) -> None:
    _fill(cluster_client, clock, 12)
    registry = build_registry(redis_cluster.client(socket_timeout=2, socket_connect_timeout=2), None, clock=clock)
    before = scrape(registry)
    assert value(before, "crmsync_tenant_scrape_success") == 1
    redis_cluster.kill_master_of(keys.config("t000"))
    try:
        # A scrape may fail while the client learns the new master (then it reports no tenant at all); the
        # next ones read every tenant again, from the promoted replica.
        def recovered() -> str | None:
            text = scrape(registry)
            if value(text, "crmsync_tenant_scrape_success") == 0:
                assert samples(text, "crmsync_quota_used") == []
                return None
            return text

        after = wait_until(recovered, 60, "a scrape that reads every tenant after the failover")
        assert value(after, "crmsync_tenants") == 12
        assert _tenant_samples(after) == _tenant_samples(before)
    finally:
        redis_cluster.heal()


def test_a_stale_slot_map_is_followed(redis_cluster: LocalRedisCluster, cluster_client: redis.RedisCluster,
                                      clock: FakeClock) -> None:
    _fill(cluster_client, clock, 6)
    client = redis_cluster.client()
    collector = TenantCollector(client, clock=clock)
    before = collector.scrape()
    slot = key_slot(keys.config("t000").encode())
    right = client.nodes_manager.slots_cache[slot][0]
    wrong = next(node for node in client.get_primaries() if node.name != right.name)
    client.nodes_manager.slots_cache[slot] = [wrong]  # as after a resharding this client has not heard of

    after = collector.scrape()

    assert (after.success, after.errors, after.tenants) == (1, 0, 6)
    assert after.lines == before.lines
    assert client.nodes_manager.slots_cache[slot][0].name == right.name  # the MOVED reply was followed
    client.close()


def test_crmsync_metrics_serves_a_shard_of_a_redis_cluster(redis_cluster: LocalRedisCluster,
                                                            cluster_client: redis.RedisCluster,
                                                            clock: FakeClock) -> None:
    tenants = _fill(cluster_client, clock, 12)
    mine = sorted(t for t in tenants if Shard(1, 2).holds(t))
    env = {**os.environ, "REDIS_URL": redis_cluster.url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "worker.cli.metrics", "--port", "0", "--shard", "1/2"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "tenant gauges on, shard 1/2" in line, line + (process.stderr.read() if process.stderr else "")
        text = requests.get(line.split()[1], timeout=30).text
        assert sorted(labels["tenant"] for labels, _ in samples(text, "crmsync_tenant_paused")) == mine
        assert value(text, "crmsync_tenants") == len(mine)
        assert value(text, "crmsync_tenant_scrape_success") == 1
        assert samples(text, "crmsync_redis_maxmemory_policy_info") == []  # shard 0 reports it
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_only_shard_0_serves_worker_metrics(redis_client: redis.Redis, redis_url: str, prom_dir: Path) -> None:
    run_proc(prom_dir, "requests", 2)  # worker-like processes wrote their counters
    env = {**os.environ, "REDIS_URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    counted = []
    for shard in ("0/2", "1/2"):
        process = subprocess.Popen([sys.executable, "-m", "worker.cli.metrics", "--port", "0", "--shard", shard],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("serving "), line + (process.stderr.read() if process.stderr else "")
            counted.append(value(requests.get(line.split()[1], timeout=30).text, "crmsync_credits_charged_total"))
        finally:
            process.terminate()
            process.wait(timeout=30)
        assert ("shard 0 serves them" in line) == (shard != "0/2")
    assert counted == [3, None]  # the pool's counters once, from shard 0


def test_each_cluster_nodes_eviction_policy(redis_cluster: LocalRedisCluster, cluster_client: redis.RedisCluster,
                                            clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _fill(cluster_client, clock, 3)
    evicting = redis_cluster.masters()[1]
    node = redis.Redis.from_url(evicting.url)
    node.config_set("maxmemory-policy", "volatile-lru")
    try:
        text = scrape(build_registry(cluster_client, None, clock=clock))
        policies = {labels["node"]: labels["policy"] for labels, _ in
                    samples(text, "crmsync_redis_maxmemory_policy_info")}
        assert set(policies) >= {f"127.0.0.1:{m.port}" for m in redis_cluster.masters()}  # every master at least
        assert policies.pop(f"127.0.0.1:{evicting.port}") == "volatile-lru"
        assert set(policies.values()) == {"noeviction"}

        monkeypatch.setenv("REDIS_URL", redis_cluster.url)
        assert main(["status"]) == 0
        warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
        assert warnings == [f"warning: node 127.0.0.1:{evicting.port}: " + (eviction_warning("volatile-lru") or "")]
    finally:
        node.config_set("maxmemory-policy", "noeviction")
        node.close()
