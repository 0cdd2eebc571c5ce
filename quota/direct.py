"""Per-thread Redis connections for the metering hot path, outside redis-py's connection pool.

Every Salesforce request waits for one credit take. Through ``Redis.execute_command`` about half of a
take's client CPU goes to checking a connection out of the pool and back in and to redis-py's retry and
observability wrappers. Each thread here keeps one connection of its own, built from the client's pool
settings (address, TLS, ACL user and password, timeouts), so a take is one write and one read.

Nothing is retried: a command that failed may have run, and a refund run twice would hand out a credit
that was never returned. A connection the server closed while it sat idle is found before the next
command is sent (as the pool does), so an idle worker does not see a spurious failure.
"""

from __future__ import annotations

import os
import select
import ssl
import threading
import weakref
from typing import Any

import redis
from redis.crc import key_slot

__all__ = ["ClusterConnections", "DirectConnections"]

_REDIRECTS = 3  # MOVED/ASK answers followed for one command (each means the command did not run)


class DirectConnections:
    """One connection per thread and process to the server behind ``pool``; a forked child opens its own."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._local = threading.local()
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()

    def execute(self, *args: Any) -> Any:
        """Send one command on this thread's connection and return its reply.

        Raises what redis-py raises: ``ResponseError`` for an error reply (the connection stays usable),
        ``ConnectionError`` or ``TimeoutError`` when the server cannot be reached in time.
        """
        conn = self._connection()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            # A reply may be half read (a timeout, an interrupt): the connection is out of step for good.
            conn.disconnect()
            raise

    def close(self) -> None:
        """Close every connection opened here, in any thread; each reconnects on its next command."""
        for conn in list(self._opened):
            conn.disconnect()

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            # A connection inherited across fork shares its socket with the parent: never write to it.
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            self._opened.add(conn)
        elif conn._sock is not None and _stale(local, conn._sock):  # only a connected one can go stale
            conn.disconnect()
        return conn


def _stale(local: threading.local, sock: Any) -> bool:
    # Between commands nothing should be waiting to be read: data or EOF means the server hung up.
    if isinstance(sock, ssl.SSLSocket):
        # TLS may hold records that are no reply (session tickets): redis-py's parser reads through them.
        try:
            return bool(local.conn.can_read(timeout=0))
        except (redis.ConnectionError, OSError):
            return True
    # A plain socket: one poll() system call, a few times cheaper than can_read's timeout juggling.
    if getattr(local, "polled", None) is not sock:
        local.poller = select.poll()
        local.poller.register(sock, select.POLLIN)
        local.polled = sock
    return bool(local.poller.poll(0))


class ClusterConnections:
    """The same per-thread connections for a Redis Cluster: one per thread and node, each command sent to the
    master serving the slot of its first key (``EVALSHA sha numkeys key...``); a command without keys
    (``SCRIPT LOAD`` after a ``NOSCRIPT``) goes to the node this thread used last, the one that lacked it.

    A ``MOVED`` or ``ASK`` answer (the slot moved, or a failover: the command did not run) is followed, at most
    a few times. A connection error is not retried (the command may have run) but makes the next command
    refresh the slot map first, so once a replica has taken over, the next take reaches it.
    """

    def __init__(self, client: redis.RedisCluster) -> None:
        self._client = client
        self._nodes: dict[str, DirectConnections] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stale_map = False

    def execute(self, *args: Any) -> Any:
        """Send one command to the master serving its first key's slot (see the class) and return its reply."""
        manager = self._client.nodes_manager
        if self._stale_map:
            self._refresh()
        if str(args[0]).upper() == "EVALSHA" and int(args[2]) > 0:
            key = self._client.encoder.encode(args[3])  # type: ignore[no-untyped-call]  # untyped in redis-py
            node = manager.get_node_from_slot(key_slot(key))
        else:
            node = getattr(self._local, "node", None) or self._client.get_default_node()  # type: ignore[no-untyped-call]
        asking = False
        for _ in range(_REDIRECTS):
            self._local.node = node
            direct = self._direct(node)
            try:
                if asking:
                    direct.execute("ASKING")
                return direct.execute(*args)
            except redis.exceptions.MovedError as moved:  # a subclass of AskError: test it first
                manager.move_slot(moved)
                node, asking = manager.get_node_from_slot(moved.slot_id), False
            except redis.exceptions.AskError as ask:
                node = manager.get_node(host=ask.host, port=ask.port) or node
                asking = True
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError):
                self._stale_map = True
                raise
        raise redis.exceptions.ClusterError(f"more than {_REDIRECTS} redirections for {args[0]!r}")

    def close(self) -> None:
        """Close every connection opened here, to every node."""
        with self._lock:
            nodes = list(self._nodes.values())
        for direct in nodes:
            direct.close()

    def _direct(self, node: Any) -> DirectConnections:
        direct = self._nodes.get(node.name)
        if direct is None:
            with self._lock:
                direct = self._nodes.get(node.name)
                if direct is None:
                    if node.redis_connection is None:
                        self._client.nodes_manager.create_redis_connections([node])  # type: ignore[no-untyped-call]
                    direct = self._nodes[node.name] = DirectConnections(node.redis_connection.connection_pool)
        return direct

    def _refresh(self) -> None:
        try:
            self._client.nodes_manager.initialize()
        except redis.exceptions.RedisClusterException as exc:  # no node answered: not a RedisError of its own
            raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from None
        self._stale_map = False
