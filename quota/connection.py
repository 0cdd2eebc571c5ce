"""The one way crmsync builds a Redis client for its state from a URL, and the topology check run at start.

URL forms (``REDIS_URL``):

- ``redis://[user:password@]host:port[/db]``, ``rediss://...``, ``unix:///path?db=N``: one Redis node
  (``redis.Redis``).
- ``redis+cluster://[user:password@]host:port[,host:port...][/]`` and ``rediss+cluster://...`` (TLS): a Redis
  Cluster (``redis.RedisCluster``), discovered from the seed nodes listed; one seed is enough, more let a
  process start while one of them is down. Query options (``?socket_timeout=5``...) apply to every node. A
  cluster has only database 0.

``check_topology`` refuses a Redis that does not match its URL: a cluster URL naming a node that is not in
cluster mode, a single-node URL naming a cluster node (it would answer MOVED for most tenants), or a cluster
whose slots are not all served or whose state is not ``ok``. Each is a ``RedisTopologyError`` (an
``InvalidInput``: the ``crmsync`` commands print its one line and exit 2). A Redis that cannot be reached is no
topology error: callers decide whether to wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry

from quota.errors import QuotaUnavailable, RedisConfigError, RedisTopologyError, RedisUrlError
from quota.urls import CLUSTER_SCHEMES, is_cluster_url, redact_url
from quota.urls import scheme as url_scheme

__all__ = [
    "CLUSTER_SCHEMES",
    "RedisClient",
    "check_topology",
    "connect",
    "connect_checked",
    "is_cluster_url",
    "redact_url",
]

RedisClient: TypeAlias = "redis.Redis | redis.RedisCluster"
"""What ``connect`` returns: a single-node client or a cluster client (both take the same one-slot commands)."""

_NODE_SCHEMES = ("redis", "rediss", "unix")
_SLOTS = 16384
# How long a start waits for a cluster that has every slot assigned but is not ok (a failover under way).
_SETTLE_S = 10.0


def _cluster_parts(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The URL of the first seed in the single-node form redis-py parses, and every seed's (host, port)."""
    scheme = url_scheme(url)
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for entry in hostlist.split(","):
        try:
            address = urlsplit(f"//{entry}")
            host, port = address.hostname, address.port or 6379
        except ValueError:
            host = None
        if not entry or host is None:
            raise RedisUrlError(f"REDIS_URL {redact_url(url)}: {entry!r} is not host:port (expected "
                                f"{scheme}://[user:password@]host:port[,host:port...]/)")
        seeds.append((host, port))
    if parts.path not in ("", "/", "/0"):
        raise RedisUrlError(f"REDIS_URL {redact_url(url)}: a Redis Cluster has only database 0")
    first = f"{userinfo}@{hostlist.split(',')[0]}" if userinfo else hostlist.split(",")[0]
    return urlunsplit((CLUSTER_SCHEMES[scheme], first, "", parts.query, "")), seeds


def connect(url: str, **redis_options: Any) -> RedisClient:
    """A client for ``url``: ``redis.RedisCluster`` for a cluster URL, else ``redis.Redis``.

    ``redis_options`` go to the client (timeouts...). ``retry=None`` means no retries on either kind.
    Raises ``RedisUrlError`` for a URL of neither form, ``RedisTopologyError`` when a cluster URL's seeds answer
    but are no usable cluster, ``QuotaUnavailable`` when no seed of a cluster URL can be reached (a cluster
    client learns the slot map as it is built).
    """
    scheme = url_scheme(url)
    if scheme not in CLUSTER_SCHEMES:
        if scheme not in _NODE_SCHEMES:
            raise RedisUrlError(f"REDIS_URL {redact_url(url)}: expected redis://, rediss://, unix://, "
                                "redis+cluster:// or rediss+cluster://")
        return redis.Redis.from_url(url, **redis_options)
    seed_url, seeds = _cluster_parts(url)
    options = dict(redis_options)
    if "retry" in options and options["retry"] is None:
        options["retry"] = Retry(NoBackoff(), 0)
    try:
        return redis.RedisCluster.from_url(
            seed_url,
            startup_nodes=[ClusterNode(host, port) for host, port in seeds[1:]],  # type: ignore[no-untyped-call]
            **options,
        )
    except redis.exceptions.RedisClusterException as exc:
        raise _construction_error(url, exc) from None
    except redis.RedisError as exc:
        raise QuotaUnavailable(f"Redis Cluster {redact_url(url)} unavailable: {type(exc).__name__}: {exc}") from None


def _construction_error(url: str, exc: Exception) -> Exception:
    text = str(exc)
    where = redact_url(url)
    if "AUTH" in text or "WRONGPASS" in text or "NOAUTH" in text or "password" in text:
        return _auth_error(url)
    if "Cluster mode is not enabled" in text:
        return RedisTopologyError(f"REDIS_URL {where} names a Redis Cluster, but the server is not in cluster "
                                  "mode: use redis:// (or rediss://) for a single node")
    if "not covered" in text or "All slots are not covered" in text:
        return RedisTopologyError(f"REDIS_URL {where}: the Redis Cluster does not serve every slot (some hash "
                                  "slots have no master): fix the cluster (redis-cli --cluster check/fix)")
    if "connected" in text or "reachable" in text or "Connection" in text or "Timeout" in text:
        return QuotaUnavailable(f"Redis Cluster {where} unavailable: no seed node answered ({text.splitlines()[0]})")
    return RedisTopologyError(f"REDIS_URL {where}: not a usable Redis Cluster: {text.splitlines()[0]}")


def _auth_error(url: str) -> RedisConfigError:
    return RedisConfigError(f"REDIS_URL {redact_url(url)}: Redis refused the URL's user or password")


def _info(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)


def check_topology(client: RedisClient, url: str, *, settle_s: float = _SETTLE_S,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Raise ``RedisTopologyError`` when the Redis behind ``client`` is not what ``url`` names.

    A single node must not be a cluster node. A cluster must serve every slot with its state ``ok`` on every
    master; a cluster with every slot assigned but not ``ok`` (a failover under way) is given ``settle_s``.
    Connection errors propagate (as redis-py raises them): an unreachable Redis is the caller's to handle.
    A Redis that refuses the check's commands to this ACL user is taken as it is named.
    """
    where = redact_url(url)
    if not isinstance(client, redis.RedisCluster):
        try:
            info = _info(client.info("cluster"))
        except redis.exceptions.NoPermissionError:
            return
        if info.get("cluster_enabled") == "1":
            raise RedisTopologyError(f"REDIS_URL {where} names one node of a Redis Cluster: use "
                                     "redis+cluster://host:port (or rediss+cluster://) so each tenant's keys are "
                                     "sent to the node serving them")
        return
    deadline = clock() + settle_s
    while True:
        problem = _cluster_problem(client)
        if problem is None:
            return
        fatal, why = problem
        if fatal or clock() >= deadline:
            raise RedisTopologyError(f"REDIS_URL {where}: {why}")
        sleep(0.2)
        try:
            client.nodes_manager.initialize()
        except redis.exceptions.RedisClusterException as exc:  # no node answered: not a RedisError of its own
            raise redis.ConnectionError(str(exc)) from None


def _cluster_problem(client: redis.RedisCluster) -> tuple[bool, str] | None:
    """``None`` when every master says ok with every slot assigned; else (fatal, why). A master that does not
    answer is a problem to wait on (a failover may be under way); when none answers, the error is raised."""
    replies: dict[str, Any] = {}
    unreachable: list[str] = []
    primaries = client.get_primaries()  # type: ignore[no-untyped-call]  # untyped in redis-py
    for node in primaries:
        try:
            replies[node.name] = client.execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "INFO", target_nodes=node)
        except redis.exceptions.NoPermissionError:
            return None
        except (redis.ConnectionError, redis.TimeoutError):
            if not replies and len(unreachable) + 1 == len(primaries):
                raise
            unreachable.append(node.name)
    for node_name, reply in replies.items():
        info = _info(reply)
        assigned = int(info.get("cluster_slots_assigned", "0") or 0)
        if assigned < _SLOTS:
            return True, (f"only {assigned} of the {_SLOTS} hash slots are assigned to a master (node {node_name}): "
                          "fix the cluster (redis-cli --cluster check/fix)")
        if info.get("cluster_state") != "ok":
            return False, (f"the Redis Cluster's state is {info.get('cluster_state')!r} on node {node_name}, not "
                           "'ok' (a master down without a replica to take over?)")
    if unreachable:
        return False, f"master {unreachable[0]} does not answer (a master down without a replica to take over?)"
    return None


def connect_checked(url: str, **redis_options: Any) -> RedisClient:
    """``connect`` then ``check_topology``: what every entry point calls at start. A Redis that cannot be
    reached is not checked (the caller waits for it or says so); a mismatch raises ``RedisTopologyError``, and
    credentials Redis refuses ``RedisConfigError``."""
    client = connect(url, **redis_options)
    try:
        check_topology(client, url)
    except redis.exceptions.AuthenticationError:  # a ConnectionError, but no waiting fixes it
        client.close()
        raise _auth_error(url) from None
    except (redis.ConnectionError, redis.TimeoutError):
        pass
    except RedisConfigError:
        client.close()
        raise
    return client
