"""Many tenants' state read in few round trips, for the metrics collector and ``crmsync status``.

Works alike on one Redis and on a Redis Cluster: every command names one tenant's keys only (they share the
tenant's ``{T}`` hash tag, so its slot), pipelines are never transactions (redis-py's cluster pipeline sends each
node its own commands), and the only cross-tenant keys read are the registry and the paused index, each one key.

A tenant's pause and parked jobs are read only when it is in the paused index (``crmsync:paused``): every
pause and every park adds the tenant to the index first, and it leaves the index only once it is running with
nothing parked, so a tenant outside the index runs with nothing parked. That saves three of six commands for
each running tenant.

``Shard`` splits the tenants between several metrics instances by a stable hash of the tenant id;
``redis_policies`` reads Redis's eviction policy, each node's on a cluster.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import ClusterNode
from redis.crc import key_slot

from quota.bucket import meter_call
from quota.reading import Reading, needed_window
from quota.replies import text
from quota.scripts import METER
from quota.validation import TENANT_PATTERN
from quota.windows import DAILY_ENDS
from worker import keys
from worker.eviction import maxmemory_policy

__all__ = [
    "Client",
    "Shard",
    "defer",
    "ensure_meter",
    "learn",
    "meter_command",
    "meters",
    "pipelined",
    "raw_replies",
    "redis_policies",
    "registry",
    "settle",
]

#: One Redis or a Redis Cluster (``quota.connection.connect`` returns either).
Client = redis.Redis | redis.RedisCluster

#: A command as a tuple of its words, for ``execute_command``.
Command = tuple[Any, ...]

# Reads of a daily tenant's bucket: the first declares the counter this process believes open; a wrong guess
# is answered with the right one, a second miss needs the window to end in between, a third a reset time
# changed meanwhile (as ``quota.bucket`` retries a take).
_KEY_ATTEMPTS = 3

# Replies that say a cluster's slot map changed under a read: it is sent again the way that follows the change.
_REDIRECTIONS = (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
# A cluster node that cannot be reached, or a slot no node serves.
_NODE_FAILURES = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.SlotNotCoveredError)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the tenants whose id hashes (CRC-32 of its UTF-8) to ``index`` modulo
    ``count``. The hash depends on the id only, so each tenant is in exactly one shard of any ``count``, whichever
    process asks and whatever else is in Redis."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: want I/N with 0 <= I < N")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"I/N"`` (``0/4`` to ``3/4``); ``ValueError`` saying what is wrong otherwise."""
        index, slash, count = spec.partition("/")
        if not slash or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"shard {spec!r}: want I/N with 0 <= I < N, e.g. 0/4")
        return cls(int(index), int(count))

    @property
    def first(self) -> bool:
        """Whether this is shard 0, which alone reports what is not per tenant (one series per Redis)."""
        return self.index == 0

    def holds(self, tenant: str) -> bool:
        """Whether ``tenant`` belongs to this shard."""
        return self.count == 1 or zlib.crc32(tenant.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def raw_replies(client: Client) -> Client:
    """``client``, or a twin on the same server(s) that leaves replies as bytes.

    A client that decodes replies raises mid-pipeline on a value that is not UTF-8, which would fail a whole
    read; as bytes, such a value is only one unreadable field.
    """
    if isinstance(client, redis.RedisCluster):
        kwargs = dict(client.get_connection_kwargs())  # type: ignore[no-untyped-call]  # untyped in redis-py
        if not kwargs.get("decode_responses"):
            return client
        kwargs["decode_responses"] = False
        for per_node in ("host", "port", "connection_pool", "connection_class"):
            kwargs.pop(per_node, None)
        seeds = [ClusterNode(node.host, node.port) for node in client.get_nodes()]  # type: ignore[no-untyped-call]
        return redis.RedisCluster(startup_nodes=seeds, **kwargs)
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return client
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _members(reply: Any) -> list[str]:
    if not isinstance(reply, set | list):  # a key of the wrong type answers with an error: nothing in it
        return []
    return [t for t in (text(m) for m in reply) if t and TENANT_PATTERN.fullmatch(t)]


def registry(client: Client) -> tuple[list[str], set[str]]:
    """The tenant registry (``crmsync:tenants``), sorted, and the paused index (``crmsync:paused``); a member
    that is no valid tenant id (written by hand) is left out, a key of the wrong type reads as empty. One round
    trip on one Redis (two keys, possibly on two nodes of a cluster). Raises ``RedisError`` if Redis fails."""
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.TENANTS)
    pipe.smembers(keys.PAUSED)
    tenants, paused = pipe.execute(raise_on_error=False)
    for reply in (tenants, paused):
        if isinstance(reply, redis.ConnectionError | redis.TimeoutError):
            raise reply
    return sorted(set(_members(tenants))), set(_members(paused))


class _RoundTrip:
    """One pipelined round trip for a chunk of tenants, sent when made and read by ``results()``: the next one
    is sent before this one is read, so Redis answers it while this process handles the replies before."""

    def __init__(self, client: Client, part: Sequence[str], commands: Callable[[str], Sequence[Command]]) -> None:
        self.client = client
        self.part = part
        self.queued = [commands(tenant) for tenant in part]
        self.flat = [command for mine in self.queued for command in mine]
        # (a node's client, the indexes in flat of the commands sent to it, the connection they went down)
        self.sent: list[tuple[redis.Redis, list[int], Any]] = []
        self.failed = False
        if isinstance(client, redis.RedisCluster):
            self._send_cluster(client)
        else:
            self.sent.append((client, list(range(len(self.flat))), _start(client, self.flat)))

    def _send_cluster(self, client: redis.RedisCluster) -> None:
        """Each node its tenants' commands at once (the nodes work in parallel). A node that fails, or a slot no
        node serves, leaves it to ``results()`` to send the round trip again through redis-py's cluster pipeline."""
        by_node: dict[str, tuple[redis.Redis, list[int]]] = {}
        at = 0
        try:
            for tenant, mine in zip(self.part, self.queued, strict=True):
                node = client.nodes_manager.get_node_from_slot(key_slot(keys.config(tenant).encode()))
                group = by_node.get(node.name)
                if group is None:
                    group = by_node[node.name] = (client.get_redis_connection(node), [])
                group[1].extend(range(at, at + len(mine)))
                at += len(mine)
            for node_client, indexes in by_node.values():
                self.sent.append((node_client, indexes, _start(node_client, [self.flat[i] for i in indexes])))
        except _NODE_FAILURES:
            self.failed = True

    def results(self) -> list[tuple[str, list[Any]]]:
        """Each tenant with its replies (every connection read, or dropped on an error, before this returns)."""
        replies: list[Any] = [None] * len(self.flat)
        sent, self.sent = self.sent, []
        for position, (node_client, indexes, connection) in enumerate(sent):
            try:
                mine = _finish(node_client, connection, [self.flat[i] for i in indexes])
            except _NODE_FAILURES:
                if not isinstance(self.client, redis.RedisCluster):
                    _abandon(sent[position + 1:])
                    raise
                self.failed = True
                continue
            for i, reply in zip(indexes, mine, strict=True):
                replies[i] = reply
                self.failed = self.failed or isinstance(reply, _REDIRECTIONS)
        if self.failed and isinstance(self.client, redis.RedisCluster):
            # The slot map changed under this read (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or a node failed: send it
            # again through redis-py's cluster pipeline, which follows the cluster.
            pipe: Any = self.client.pipeline(transaction=False)  # type: ignore[no-untyped-call]  # untyped
            execute: Any = pipe.execute_command
            for command in self.flat:
                execute(*command)
            replies = list(pipe.execute(raise_on_error=False))
        out = []
        at = 0
        for tenant, mine_queued in zip(self.part, self.queued, strict=True):
            out.append((tenant, replies[at:at + len(mine_queued)]))
            at += len(mine_queued)
        return out

    def abandon(self) -> None:
        """Drop the connections of a round trip that will not be read."""
        sent, self.sent = self.sent, []
        _abandon(sent)


def _abandon(sent: Sequence[tuple[redis.Redis, list[int], Any]]) -> None:
    for node_client, _, connection in sent:
        connection.disconnect()
        node_client.connection_pool.release(connection)


# On one Redis, and on each node of a cluster, the commands go straight down one connection of the client's pool:
# redis-py's pipeline objects cost about as much again per command as the protocol itself (its cluster pipeline
# several times that), and at 100,000 tenants that is seconds.

def _start(client: redis.Redis, queued: list[Command]) -> Any:
    """Send ``queued`` down a connection of ``client``'s pool in one write; the connection, to read from."""
    connection: Any = client.connection_pool.get_connection()  # redis-py leaves its connection methods untyped
    try:
        connection.send_packed_command(connection.pack_commands(queued))
    except BaseException:
        connection.disconnect()
        client.connection_pool.release(connection)
        raise
    return connection


def _finish(client: redis.Redis, connection: Any, queued: list[Command]) -> list[Any]:
    """The replies to what ``_start`` sent; a refused command's reply is its ``ResponseError``."""
    replies: list[Any] = []
    try:
        for command in queued:
            try:
                reply = connection.read_response()
            except redis.ResponseError as refused:
                reply = refused
            if command[0] == "HGETALL" and type(reply) is list:  # RESP2 answers a flat list of pairs
                reply = dict(zip(reply[::2], reply[1::2], strict=True))
            replies.append(reply)
    except BaseException:
        connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        client.connection_pool.release(connection)
    return replies


def pipelined(client: Client, tenants: Sequence[str], commands: Callable[[str], Sequence[Command]],
              chunk: int = 1000) -> Iterator[tuple[str, list[Any]]]:
    """Each tenant with the replies to its ``commands(tenant)``, in order, ``chunk`` tenants per pipelined round
    trip, the next round trip sent before the replies of one are handed out (Redis works on it meanwhile).

    A command Redis refuses (a key of the wrong type) answers with its ``ResponseError`` in place of a reply;
    Redis itself failing (unreachable, a timeout) raises.
    """
    size = max(1, chunk)
    in_flight: deque[_RoundTrip] = deque()
    try:
        for start in range(0, len(tenants), size):
            in_flight.append(_RoundTrip(client, tenants[start:start + size], commands))
            if len(in_flight) > 1:
                yield from in_flight.popleft().results()
        while in_flight:
            yield from in_flight.popleft().results()
    finally:
        for trip in in_flight:  # the caller stopped early, or a round trip failed
            trip.abandon()


def meter_command(tenant: str, now: str, counter_end: int | None = None) -> Command:
    """The metering script's read of ``tenant`` (a take of zero credits, which writes nothing), declaring the
    daily counter ending at ``counter_end`` (by default the one this process last saw open)."""
    return METER.command(*meter_call(tenant, 0, now, counter_end=counter_end))


def learn(tenant: str, reading: Reading) -> None:
    """Remember a daily tenant's open window, so the next read declares its counter right the first time."""
    if reading.mode == "daily" and reading.valid:
        DAILY_ENDS.learn(tenant, reading.window)


def _declaring(ends: dict[str, int], now: str) -> Callable[[str], Sequence[Command]]:
    """Commands for ``pipelined``: each tenant's meter read declaring the counter ending at ``ends[tenant]``."""
    return lambda tenant: (meter_command(tenant, now, ends[tenant]),)


def defer(tenant: str, reply: Any, pending: list[tuple[str, int]]) -> bool:
    """Whether the meter ``reply`` asked for another daily counter (``needed_window``); if so, remember that
    window and add ``tenant`` to ``pending``, which ``settle`` reads again declaring it."""
    end = needed_window(reply)
    if end is None:
        return False
    DAILY_ENDS.learn(tenant, end)
    pending.append((tenant, end))
    return True


def settle(client: Client, pending: Sequence[tuple[str, int]], now: str,
           chunk: int = 1000) -> Iterator[tuple[str, Any]]:
    """The meter replies of tenants whose first reply asked for another daily counter (``needed_window``):
    each asked again declaring it, pipelined, until it answers (a window that ends in between asks once more)."""
    for _ in range(_KEY_ATTEMPTS):
        if not pending:
            return
        ends = dict(pending)
        retry: list[tuple[str, int]] = []
        for tenant, (reply,) in pipelined(client, list(ends), _declaring(ends, now), chunk):
            if not defer(tenant, reply, retry):
                yield tenant, reply
        pending = retry
    for tenant, _ in pending:
        yield tenant, redis.ResponseError("the daily window moved on every read of it")


def meters(client: Client, tenants: Sequence[str], now: str, chunk: int = 1000) -> list[tuple[str, Any]]:
    """Each tenant's bucket, in the order of ``tenants``: its ``Reading``, or what the meter script answered
    instead (an error, say) when that is no reading. ``now`` is epoch seconds or ``""`` for the server's clock."""
    replies: dict[str, Any] = {}
    pending: list[tuple[str, int]] = []
    for tenant, (reply,) in pipelined(client, tenants, lambda t: (meter_command(t, now),), chunk):
        if not defer(tenant, reply, pending):
            replies[tenant] = reply
    replies.update(settle(client, pending, now, chunk))
    out: list[tuple[str, Any]] = []
    for tenant in tenants:
        reply = replies[tenant]
        reading = Reading.parse(reply)
        if reading is not None:
            learn(tenant, reading)
        out.append((tenant, reply if reading is None else reading))
    return out


def ensure_meter(client: Client, *, may_load: bool = True) -> bool:
    """Make sure pipelined EVALSHAs find the metering script (a pipeline cannot load it on a miss): load it, or,
    as a user that may not (the ``metrics`` ACL user), check that a worker did. One round trip (on a cluster,
    one per node). Returns whether this user may load it (``False`` once Redis refused: pass that next time,
    as Redis's ACL LOG records every refusal).

    Raises ``NoScriptError`` when it is missing and cannot be loaded.
    """
    execute: Any = client.execute_command
    if may_load:
        try:
            execute("SCRIPT", "LOAD", METER.source)
            return True
        except redis.exceptions.NoPermissionError:
            may_load = False
    exists = execute("SCRIPT", "EXISTS", METER.sha)
    if not (exists[0] if isinstance(exists, list) else exists):
        raise redis.exceptions.NoScriptError(
            "the metering script is not loaded (Redis restarted or failed over) and this user may not load "
            "it: a worker loads it at start and on its first take")
    return may_load


def redis_policies(client: Client) -> list[tuple[str, str | None]]:
    """Redis's ``maxmemory-policy`` (``None`` when ``INFO`` reports none): ``[("", policy)]`` for one Redis, and
    for a cluster one ``("host:port", policy)`` per node the client knows (every master, and the replicas the
    cluster lists in its slot map: a replica may be promoted), since each node has its own. Raises
    ``redis.RedisError`` when a node cannot be asked."""
    if not isinstance(client, redis.RedisCluster):
        return [("", maxmemory_policy(client))]
    return [(f"{node.host}:{node.port}", maxmemory_policy(client.get_redis_connection(node)))
            for node in sorted(client.get_nodes(),  # type: ignore[no-untyped-call]  # untyped in redis-py
                               key=lambda node: (node.host, node.port))]
