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

__all__ = ["DirectConnections"]


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
