"""What ``crmsync connect`` and ``crmsync connections`` share: the connection store on ``REDIS_URL``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from worker.cli.support import cli_redis
from worker.salesforce.connections import ConnectionStore

__all__ = ["connection_store"]


@contextmanager
def connection_store() -> Iterator[ConnectionStore]:
    """A store on ``REDIS_URL`` with short timeouts, so an unreachable Redis fails fast instead of hanging.

    A Redis error inside the block becomes a one-line ``CommandError`` (exit 1).
    """
    with cli_redis("connection store") as client:
        yield ConnectionStore(client)
