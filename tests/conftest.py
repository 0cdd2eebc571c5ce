"""Shared fixtures: a real Redis server for the whole session, and an injectable clock.

When ``REDIS_URL`` is set the tests use that server, flushing its database between tests; they refuse to
start if it holds keys that are not crmsync's, so they never wipe someone else's data. Otherwise they
start their own redis-server on a free loopback port and stop it at the end.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from worker import keys
from worker.devstack.rabbitmq_server import LocalRabbitMQ, find_rabbitmq_server
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.devstack.redis_server import EmbeddedRedis

POLL = 0.05  # seconds between two looks at a condition


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               detail: Callable[[], object] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` (and ``detail()``) after
    ``timeout`` seconds. For waiting on what another thread or process does, never for time to pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f": {detail()}" if detail is not None else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(POLL)


# 2026-11-29T12:00:00Z: tests that pass explicit times start mid-window, far from any reset.
T0 = 1_795_953_600


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_STARTED_KEY = pytest.StashKey[EmbeddedRedis]()


def pytest_configure(config: pytest.Config) -> None:
    # Before collection, so that REDIS_URL is set before anything builds a Redis client or the Dramatiq broker
    # (on first use) and is inherited by every subprocess the tests start.
    # Tests keep secrets in temporary directories (tmp_path, the emulator's key files) and reach the emulator on
    # loopback: the secret directories and login hosts allowed here, and in every process the tests start. Tests
    # of those rules set their own.
    temp_roots = [tempfile.gettempdir(), *([str(config.option.basetemp)] if config.option.basetemp else [])]
    os.environ["CRMSYNC_SECRET_DIRS"] = ":".join(os.path.abspath(root) for root in temp_roots)
    os.environ["CRMSYNC_LOGIN_HOSTS"] = "127.0.0.1,localhost"
    if not os.environ.get("REDIS_URL"):
        server = EmbeddedRedis()
        os.environ["REDIS_URL"] = server.start()
        config.stash[_STARTED_KEY] = server


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_STARTED_KEY, None)
    if server is not None:
        server.stop()
        os.environ.pop("REDIS_URL", None)


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> str:
    url = os.environ["REDIS_URL"]
    if _STARTED_KEY not in pytestconfig.stash:
        client = redis.Redis.from_url(url)
        foreign = [k for k in client.scan_iter(count=1000) if not k.startswith(keys.PREFIX.encode())]
        client.close()
        if foreign:
            pytest.exit(f"REDIS_URL {url} holds keys that are not crmsync's (e.g. {foreign[0]!r}): "
                        "point the tests at an empty database", returncode=2)
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def env(redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """A clean database that commands run in-process reach through ``REDIS_URL``."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A real Redis Cluster for the session: 3 masters with a replica each, on free loopback ports.

    ``.url`` (``redis+cluster://``), ``.masters()``, ``.master_of(key)``, ``.kill_master_of(key)`` (returns once
    the replica took over), ``.heal()`` (restart killed nodes), ``.flush()``, ``.client()``. Tests that kill
    nodes heal it afterwards, or use ``cluster_client``, which heals and flushes it before each test.
    """
    with LocalRedisCluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def cluster_client(redis_cluster: LocalRedisCluster) -> Iterator[redis.RedisCluster]:
    """A decoding client of the session's cluster, healed (all six nodes up) and empty."""
    redis_cluster.heal()
    redis_cluster.flush()
    client = redis_cluster.client(decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[LocalRabbitMQ]:
    """A real RabbitMQ node for the session (``worker/devstack/rabbitmq_server.py``: free loopback ports, its own
    user and random password, no management plugin), stopped at the end. Skips, saying why, where Debian's
    ``rabbitmq-server`` (or one on PATH) cannot be had."""
    try:
        script = find_rabbitmq_server()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with LocalRabbitMQ(script) as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq: LocalRabbitMQ) -> str:
    """The session RabbitMQ's ``amqp://`` URL, with its user and password."""
    return rabbitmq.url
