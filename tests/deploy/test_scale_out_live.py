"""The scale-out variant's Redis Cluster files on real servers: six redis-server processes started by
deploy/redis/node-start.sh (as the compose services and the Kubernetes pods start them) and made a cluster by
deploy/redis/create-cluster.sh (as the one-shot service and the Job do), on free loopback ports.

Checked: three masters each with a replica in sync (the replica user's login works), every node has the ACL
users and only the break-glass hash, a second creation changes nothing, each service's real code path runs on
the cluster as its own ACL user with nothing refused (redis-py's cluster client and crmsync's topology check
included), the nodes' own users reach no key, and a whole-cluster restart with every address changed comes back
(node-start.sh writes the nodes' current addresses into nodes.conf).

The only change to the repository's files: redis.conf's ``dir /data`` (read before any command-line option) is
pointed at a temporary directory in a copy of deploy/redis.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import redis

from quota import CreditBucket
from quota.connection import connect_checked
from quota.errors import RedisTopologyError
from tests.conftest import wait_until
from tests.deploy.conftest import DEPLOY, AclRedis, acl_binary, acl_server, new_passwords
from worker.devstack.redis_cluster import find_cli_binary
from worker.devstack.redis_server import die_with_parent, find_server_binary, free_loopback_port
from worker.metrics.server import build_registry, scrape
from worker.scheduling.scheduler import Scheduler

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
NODE_START = DEPLOY / "redis" / "node-start.sh"
CREATE = DEPLOY / "redis" / "create-cluster.sh"
SERVICE_USERS = ("admin", "worker", "scheduler", "metrics")
ALL_USERS = ("default", "breakglass", "admin", "worker", "scheduler", "metrics", "replica", "clusteradmin")
READY_S = 60.0


@dataclass
class DeployCluster:
    """Six nodes started by node-start.sh from a copy of deploy/redis."""

    workdir: Path
    passwords: dict[str, str]
    ports: list[int] = field(default_factory=list)
    bus_ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def url(self, user: str) -> str:
        seeds = ",".join(f"localhost:{port}" for port in self.ports[:3])
        return f"redis+cluster://{user}:{self.passwords[user]}@{seeds}"

    def node(self, port: int, user: str = "breakglass") -> redis.Redis:
        return redis.Redis(port=port, username=user, password=self.passwords[user], socket_timeout=10,
                           decode_responses=True)

    def env(self, index: int) -> dict[str, str]:
        server = Path(find_server_binary()).parent
        env = {"PATH": f"{server}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "CRMSYNC_REDIS_CONF_DIR": str(self.workdir / "conf"),
               "CRMSYNC_REDIS_RUN_DIR": str(self.workdir / f"n{index}" / "run"),
               "CRMSYNC_REDIS_DATA_DIR": str(self.workdir / f"n{index}" / "data"),
               "CRMSYNC_REDIS_ANNOUNCE_HOSTNAME": "localhost",
               "CRMSYNC_REDIS_BREAKGLASS_PASSWORD_SHA256":
                   hashlib.sha256(self.passwords["breakglass"].encode()).hexdigest()}
        env.update({f"CRMSYNC_REDIS_{user.upper()}_PASSWORD": pw for user, pw in self.passwords.items()
                    if user != "breakglass"})
        return env

    def start(self) -> None:
        for index, (port, bus) in enumerate(zip(self.ports, self.bus_ports, strict=True)):
            data = self.workdir / f"n{index}" / "data"
            data.mkdir(parents=True, exist_ok=True)
            log = (self.workdir / f"n{index}" / "start.log").open("ab")
            self.procs.append(subprocess.Popen(
                ["sh", str(NODE_START), "--port", str(port), "--cluster-port", str(bus), "--dir", str(data),
                 "--bind", "127.0.0.1", "--logfile", str(data.parent / "redis.log")],
                env=self.env(index), stdout=log, stderr=log, start_new_session=True,
                preexec_fn=die_with_parent))  # noqa: PLW1509 (one prctl call)
            log.close()
        for port in self.ports:
            wait_until(lambda port=port: self._pong(port), READY_S, f"node {port} to answer", detail=self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def create(self) -> subprocess.CompletedProcess[str]:
        env = {"PATH": self.env(0)["PATH"], "CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD": self.passwords["clusteradmin"],
               "CRMSYNC_REDIS_WAIT_SECONDS": str(int(READY_S))}
        return subprocess.run(["sh", str(CREATE), *(f"localhost:{port}" for port in self.ports)], env=env,
                              capture_output=True, text=True, timeout=180, check=False)

    def settled(self) -> bool:
        """Every node sees the cluster ok, and every replica's link to its master is up."""
        for port in self.ports:
            node = self.node(port)
            try:
                if node.cluster("INFO")["cluster_state"] != "ok":
                    return False
                replication = node.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
            finally:
                node.close()
        return True

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-600:] for p in sorted(self.workdir.glob("n*/*.log")))

    def _pong(self, port: int) -> bool:
        node = self.node(port)
        try:
            return bool(node.ping())
        except redis.RedisError:
            return False
        finally:
            node.close()


def _ports(count: int) -> list[int]:
    taken: set[int] = set()
    while len(taken) < count:
        taken.add(free_loopback_port())
    return sorted(taken)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployCluster]:
    if find_cli_binary(find_server_binary()) is None:
        pytest.skip("no redis-cli: create-cluster.sh needs it")
    if shutil.which("getent") is None:
        pytest.skip("no getent: node-start.sh and create-cluster.sh resolve names with it")
    workdir = tmp_path_factory.mktemp("scale-out")
    shutil.copytree(DEPLOY / "redis", workdir / "conf")
    conf = workdir / "conf" / "redis.conf"
    text, count = re.subn(r"^dir /data$", f"dir {workdir}", conf.read_text(), flags=re.MULTILINE)
    assert count == 1
    conf.write_text(text)
    passwords = {**new_passwords(), "replica": os.urandom(16).hex(), "clusteradmin": os.urandom(16).hex()}
    ports = _ports(12)
    deployed = DeployCluster(workdir, passwords, ports[:6], ports[6:])
    try:
        deployed.start()
        created = deployed.create()
        assert created.returncode == 0, created.stdout + created.stderr + deployed.logs()
        assert "cluster created: 3 masters, 6 nodes" in created.stdout
        wait_until(deployed.settled, READY_S, "the cluster to settle, replicas in sync", detail=deployed.logs)
        yield deployed
    finally:
        deployed.stop()


def _refusals(deployed: DeployCluster) -> list[str]:
    """What any node refused since the last reset (ACL LOG), as 'user: object'."""
    refused = []
    for port in deployed.ports:
        node = deployed.node(port)
        refused += [f"{entry['username']}: {entry['object']} ({entry['reason']})" for entry in node.acl_log()]
        node.close()
    return refused


def _reset_refusals(deployed: DeployCluster) -> None:
    for port in deployed.ports:
        node = deployed.node(port)
        node.acl_log_reset()
        node.close()


def test_three_masters_each_with_a_replica_in_sync(cluster: DeployCluster) -> None:
    node = cluster.node(cluster.ports[0])
    lines = node.execute_command("CLUSTER", "NODES").splitlines()
    node.close()
    masters = [line for line in lines if "master" in line.split()[2]]
    replicas = [line for line in lines if "slave" in line.split()[2]]
    assert len(masters) == 3
    assert len(replicas) == 3
    assert {r.split()[3] for r in replicas} == {m.split()[0] for m in masters}  # one replica per master
    assert all(",localhost " in line for line in lines)  # each announces its name (clients connect by it)
    assert cluster.settled()  # replicas logged in to their masters as `replica`


def test_every_node_has_the_acl_users_and_only_the_breakglass_hash(cluster: DeployCluster) -> None:
    for index, port in enumerate(cluster.ports):
        node = cluster.node(port)
        assert sorted(cast(list[str], node.acl_users())) == sorted(ALL_USERS)
        assert node.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert node.config_get("masteruser") == {"masteruser": "replica"}
        node.close()
        rendered = (cluster.workdir / f"n{index}" / "run" / "users.acl").read_text()
        assert all(pw not in rendered for pw in cluster.passwords.values())
        assert f"#{hashlib.sha256(cluster.passwords['breakglass'].encode()).hexdigest()}" in rendered


def test_creating_again_changes_nothing(cluster: DeployCluster) -> None:
    again = cluster.create()
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert cluster.settled()


def test_clusteradmin_checks_the_cluster(cluster: DeployCluster) -> None:
    # deploy/README.md's check, as the user it names.
    env = {"PATH": cluster.env(0)["PATH"], "REDISCLI_AUTH": cluster.passwords["clusteradmin"]}
    check = subprocess.run(["redis-cli", "--user", "clusteradmin", "--no-auth-warning", "--cluster", "check",
                            f"127.0.0.1:{cluster.ports[0]}"], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "[OK] All 16384 slots covered." in check.stdout


def test_each_service_runs_on_the_cluster_as_its_own_user(cluster: DeployCluster) -> None:
    _reset_refusals(cluster)
    env = {**os.environ, "REDIS_URL": cluster.url("admin"), "CRMSYNC_ACTOR": "scale-out-test"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run([CRMSYNC, "quota", "set", "acme", "100000"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    worker = connect_checked(cluster.url("worker"))
    grant = CreditBucket(worker).take("acme", 3)
    assert grant.granted
    worker.close()
    metrics = connect_checked(cluster.url("metrics"))
    text = scrape(build_registry(metrics, None))
    metrics.close()
    assert "crmsync_tenant_scrape_success 1.0" in text, text
    assert 'crmsync_quota_used{tenant="acme"} 3' in text, text
    scheduler = connect_checked(cluster.url("scheduler"))
    instance = Scheduler(scheduler, instance_id="scale-out-test", tick_s=1, lease_ttl_s=5)
    assert instance.hold_lease()
    assert instance.release()
    scheduler.close()
    status = subprocess.run([CRMSYNC, "status", "--json"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert status.returncode == 0, status.stderr
    assert "acme" in status.stdout
    # Nothing any of them sent was refused (CLUSTER SLOTS, INFO, scripts...) but the metrics user's one try at
    # loading the metering script, which it may not (it then checks that a worker loaded it: users.acl).
    assert set(_refusals(cluster)) <= {"metrics: script|load (command)"}


def test_the_metrics_endpoint_needs_no_broker(cluster: DeployCluster, tmp_path: Path) -> None:
    # The variants give `crmsync metrics` a cluster URL and no BROKER_URL (it queues nothing).
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if k not in {"BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    env["REDIS_URL"] = cluster.url("metrics")
    log = tmp_path / "metrics.log"
    with log.open("wb") as out:
        process = subprocess.Popen([CRMSYNC, "metrics", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def served() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    return str(response.read().decode())
            except OSError:
                assert process.poll() is None, log.read_text()
                return None
        text = wait_until(served, READY_S, "crmsync metrics to serve", detail=log.read_text)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert re.search(r"^crmsync_tenant_scrape_success 1(\.0)?$", text, re.MULTILINE), text


@pytest.mark.parametrize("user", SERVICE_USERS)
def test_a_node_url_at_a_cluster_node_is_refused_for_every_user(cluster: DeployCluster, user: str) -> None:
    # The topology check at start runs with each service's own user: it may ask what it needs to.
    url = f"redis://{user}:{cluster.passwords[user]}@127.0.0.1:{cluster.ports[0]}/0"
    with pytest.raises(RedisTopologyError, match="names one node of a Redis Cluster"):
        connect_checked(url)


def test_the_nodes_own_users_reach_no_key(cluster: DeployCluster) -> None:
    port = cluster.ports[0]
    for user in ("replica", "clusteradmin"):
        client = cluster.node(port, user)
        for command in (("GET", "crmsync:tenants"), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        client.close()
    admin = cluster.node(port, "clusteradmin")
    assert admin.cluster("INFO")["cluster_state"] == "ok"  # what `redis-cli --cluster check` needs
    admin.close()
    replica = cluster.node(port, "replica")
    with pytest.raises(redis.exceptions.NoPermissionError):
        replica.cluster("INFO")
    replica.close()


def test_moving_a_single_redis_into_the_cluster(cluster: DeployCluster, tmp_path: Path) -> None:
    # deploy/README.md's move: `redis-cli --cluster import` as breakglass on both sides copies every key to the
    # node serving its slot; the tenants' state then reads the same through the cluster.
    passwords = new_passwords()
    with acl_server(acl_binary(), tmp_path / "single", passwords) as single:
        old = AclRedis(single.port, passwords)
        admin, worker = old.client("admin"), old.client("worker")
        for tenant, taken in (("hooli", 3), ("initech", 11)):
            CreditBucket(admin).set_limit(tenant, 100_000, actor="scale-out-test")
            assert CreditBucket(worker).take(tenant, taken).granted
        admin.close()
        worker.close()
        env = {"PATH": cluster.env(0)["PATH"], "REDISCLI_AUTH": cluster.passwords["breakglass"]}
        moved = subprocess.run(
            ["redis-cli", "--user", "breakglass", "--no-auth-warning", "--cluster", "import",
             f"127.0.0.1:{cluster.ports[0]}", "--cluster-from", f"127.0.0.1:{single.port}",
             "--cluster-from-user", "breakglass", "--cluster-from-pass", passwords["breakglass"],
             "--cluster-copy", "--cluster-replace"],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert moved.returncode == 0, moved.stdout + moved.stderr
    client = connect_checked(cluster.url("admin"))
    statuses = {tenant: CreditBucket(client).status(tenant) for tenant in ("hooli", "initech")}
    assert {"hooli", "initech"} <= {member.decode() for member in client.smembers("crmsync:tenants")}
    client.close()
    assert {tenant: (s.limit, s.used) for tenant, s in statuses.items()} == {"hooli": (100_000, 3),
                                                                           "initech": (100_000, 11)}


def test_a_whole_cluster_restart_with_new_addresses_comes_back(cluster: DeployCluster) -> None:
    admin = connect_checked(cluster.url("admin"))
    CreditBucket(admin).set_limit("globex", 100_000, actor="scale-out-test")
    assert CreditBucket(admin).take("globex", 5).granted
    admin.close()
    # As when every pod or container comes back with a new IP: nodes.conf still names the old ones.
    cluster.stop()
    for index in range(len(cluster.ports)):
        nodes = cluster.workdir / f"n{index}" / "data" / "nodes.conf"
        text, count = re.subn(r" 127\.0\.0\.1:", " 192.0.2.1:", nodes.read_text())
        assert count == 6
        nodes.write_text(text)
    cluster.start()
    for index in range(len(cluster.ports)):
        assert "192.0.2.1" not in (cluster.workdir / f"n{index}" / "data" / "nodes.conf").read_text()
    wait_until(cluster.settled, READY_S, "the restarted cluster to settle", detail=cluster.logs)
    worker = connect_checked(cluster.url("worker"))
    grant = CreditBucket(worker).take("globex", 1)  # AOF kept the limit and the credits taken
    worker.close()
    assert grant.granted
    assert grant.remaining == 99_994
