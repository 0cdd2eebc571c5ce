"""What the ``crmsync`` commands share: the one Redis client factory, whose client fails fast."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis

from quota.connection import connect_checked
from worker.errors import EXIT_FAILURE, CommandError
from worker.settings import redis_url

__all__ = ["CLI_TIMEOUT_S", "cli_redis", "redis_client"]

# A command waits this long for Redis before it says so, instead of hanging.
CLI_TIMEOUT_S = 5.0


def redis_client() -> redis.Redis:
    """A client on ``REDIS_URL`` (one node or a cluster) with short timeouts, its topology checked: a Redis that
    is not what the URL names raises ``RedisTopologyError`` (exit 2, one line). A ``RedisCluster`` serves the
    same one-slot commands as a ``redis.Redis``, hence the cast."""
    return cast(redis.Redis, connect_checked(redis_url(), socket_connect_timeout=CLI_TIMEOUT_S,
                                             socket_timeout=CLI_TIMEOUT_S))


@contextmanager
def cli_redis(what: str) -> Iterator[redis.Redis]:
    """A client for one command; a Redis error inside the block becomes ``CommandError`` (exit 1) saying
    ``what`` is unavailable, instead of a traceback."""
    client = redis_client()
    try:
        yield client
    except redis.RedisError as exc:
        raise CommandError(f"{what} unavailable: {type(exc).__name__}: {exc} (is REDIS_URL right?)",
                           exit_code=EXIT_FAILURE) from None
    finally:
        client.close()
