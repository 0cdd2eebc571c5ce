"""Every key a Lua script touches is one it declared in KEYS (Redis Cluster requires it: an undeclared key may
live on another node, and within one slot nothing else catches it). Checked by Redis itself: MONITOR lists each
command a script runs, and ``COMMAND GETKEYS`` names the keys of each; they must all be among the KEYS of the
``EVALSHA`` that ran it. The scenarios cover every branch that touches a key: takes, refunds and reads in both
window modes, a wrong counter guess, limit, reset-time and mode changes carrying credits, and the worker's
scripts (park, narrow, leases, schedule claims, pull records)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from quota import CreditBucket
from quota.scripts import LuaScript
from quota.windows import DAILY_ENDS, DAY
from tests.conftest import T0, FakeClock, wait_until
from worker import keys
from worker.devstack.redis_server import EmbeddedRedis
from worker.jobs.parking import ParkedJob, PauseStore

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def _unescape(raw: str) -> str:
    return re.sub(r"\\x([0-9a-f]{2})|\\(.)",
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else _ESCAPES.get(m.group(2), m.group(2)), raw)


class KeySpy:
    """MONITORs a server; ``undeclared()`` lists each script command that touched a key its EVALSHA did not
    declare, ``script_commands`` counts the script commands seen (so a spy that saw nothing fails)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._buffer = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._client = redis.Redis(port=port, decode_responses=True)
        self._client.response_callbacks["COMMAND"] = lambda reply, **options: reply  # GETKEYS' plain list
        wait_until(lambda: b"+OK" in self._data(), 10, "MONITOR to start")

    def _read(self) -> None:
        try:
            while chunk := self._sock.recv(65536):
                with self._lock:
                    self._buffer += chunk
        except OSError:  # closed by close()
            return

    def _data(self) -> bytes:
        with self._lock:
            return self._buffer

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=10)
        self._sock.close()
        self._client.close()

    def commands(self) -> list[tuple[bool, list[str]]]:
        """(run by a script, arguments) of every command seen, up to a marker sent now."""
        marker = f"spy-marker-{id(self)}-{len(self._data())}"
        self._client.echo(marker)
        wait_until(lambda: marker.encode() in self._data(), 10, "the marker in MONITOR's output")
        seen = []
        for line in self._data().decode("utf-8", "replace").splitlines():
            head = re.match(r"\+\d+\.\d+ \[\d+ ([^\]]+)\] ", line)
            if head is None:
                continue
            args = [_unescape(a) for a in _ARG.findall(line[head.end():])]
            if args and args[0].upper() == "ECHO" and args[1:] == [marker]:
                break
            seen.append((head.group(1) == "lua", args))
        return seen

    def check(self) -> int:
        """Assert every script command touched declared keys only; return how many script commands ran."""
        declared: list[str] = []
        ran = 0
        for by_script, args in self.commands():
            if not by_script:
                declared = args[3:3 + int(args[2])] if args and args[0].upper() in ("EVALSHA", "EVAL") else []
                continue
            ran += 1
            try:
                touched = self._client.execute_command("COMMAND", "GETKEYS", *args)
            except redis.ResponseError:  # "Invalid arguments" / no keys (TIME)
                touched = []
            undeclared = [k for k in touched if k not in declared]
            assert not undeclared, f"{args[0]} touched {undeclared}, not declared in {declared}"
        return ran


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as started:
        yield started


@pytest.fixture
def spy(server: EmbeddedRedis) -> Iterator[tuple[redis.Redis, KeySpy]]:
    client = redis.Redis(port=server.port, decode_responses=True)
    client.flushall()
    watcher = KeySpy(server.port)
    yield client, watcher
    watcher.close()
    client.close()


def _bucket_scenarios(bucket: CreditBucket, clock: FakeClock) -> None:
    bucket.set_limit("daily", 100_000, actor="t", reserve=10)
    grant = bucket.take("daily", 5)
    bucket.refund("daily", 2, grant=grant)
    bucket.take("daily", 99_990)  # refused: the reserve
    bucket.take("daily", 99_990, essential=True)
    bucket.status("daily")
    DAILY_ENDS.learn("daily", int(clock()) - 1)  # a stale guess: the script names the counter, the call is sent again
    bucket.take("daily", 1)
    bucket.set_limit("daily", 100_000, actor="t", reset_at="06:00")  # moves the open window's end
    bucket.take("daily", 1)
    bucket.set_limit("daily", 200_000, actor="t", window="rolling", reserve=0)  # credits carried into rolling
    rolled = bucket.take("daily", 3)
    bucket.refund("daily", 1, grant=rolled)
    bucket.refund("daily", 1, grant=grant)  # a daily take refunded in rolling mode: nothing back
    clock.advance(2 * 3600)
    bucket.take("daily", 1)
    clock.advance(DAY)
    bucket.take("daily", 1)  # drops the hours that came back
    bucket.set_limit("daily", 200_000, actor="t", window="daily", reset_at="00:00")  # carried back to daily
    bucket.take("daily", 1)
    bucket.status("daily")
    bucket.set_limit("fresh", 150_000, actor="t", reset_at="18:30", window="daily")
    bucket.take("fresh", 1)


def test_the_bucket_scripts_touch_only_declared_keys(spy: tuple[redis.Redis, KeySpy]) -> None:
    client, watcher = spy
    clock = FakeClock(T0)
    _bucket_scenarios(CreditBucket(client, clock=clock), clock)
    _bucket_scenarios(CreditBucket(client), FakeClock(T0))  # and on the server's clock
    assert watcher.check() > 50


def test_the_worker_scripts_touch_only_declared_keys(spy: tuple[redis.Redis, KeySpy]) -> None:
    client, watcher = spy

    def run(name: str, script_keys: list[str], args: list[Any]) -> Any:
        return LuaScript(name, package="worker")(client.execute_command, script_keys, args)

    pauses = PauseStore(client, clock=FakeClock(T0))
    job = ParkedJob("crmsync_pull", {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "seq": 1})
    pauses.park("acme", job, "quota_exhausted", "empty", "normal")
    pauses.park("acme", job, "org_limit", "org", "all")
    pauses.narrow("acme", "org_limit")
    run("lease_renew", [keys.SCHEDULER_LEASE], ["me", 1000])
    client.set(keys.SCHEDULER_LEASE, "me")
    run("lease_renew", [keys.SCHEDULER_LEASE], ["me", 1000])
    run("lease_release", [keys.SCHEDULER_LEASE], ["me"])
    client.zadd(keys.SCHEDULE_DUE, {"acme/Lead": 10, "acme/Contact": 20})
    run("schedule_claim", [keys.SCHEDULE_DUE], ["acme/Lead", 10, 30, "acme/Contact", 20, "", "acme/Gone", 1, 2])
    run("pull_record", [keys.active_pulls("acme"), keys.job("acme", "j1"), keys.job("acme", "j2")],
        [T0, 3600, "Lead", "j1", "Lead", "normal", "Contact", "j2", "Contact", "essential"])
    assert watcher.check() > 10


def test_the_spy_catches_an_undeclared_key(spy: tuple[redis.Redis, KeySpy]) -> None:
    client, watcher = spy
    client.eval("return redis.call('GET', KEYS[1] .. ':other')", 1, keys.config("acme"))
    with pytest.raises(AssertionError, match="not declared"):
        watcher.check()
