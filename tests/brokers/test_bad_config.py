"""A broker that is misconfigured, unreachable or refuses the login: ``crmsync worker`` and ``crmsync scheduler``
exit 2 with one line on stderr (no traceback, no password) and start nothing; a message ``crmsync sync`` cannot
send exits 1 with one line. Real subprocesses, a real RabbitMQ and a real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_until
from tests.faults.conftest import CRMSYNC
from worker.devstack.rabbitmq_server import USER, LocalRabbitMQ
from worker.devstack.redis_server import free_loopback_port

PASSWORD = "hunter2-not-the-password"  # a wrong one, checked never to be printed
STARTERS = [pytest.param(["worker", "--processes", "1", "--threads", "1"], id="worker"),
            pytest.param(["scheduler"], id="scheduler")]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
    return subprocess.run([CRMSYNC, *args], capture_output=True, text=True, env={**environ, **env}, timeout=120,
                          check=False)


def _refused(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    lines = done.stderr.splitlines()
    assert len(lines) == 1, output
    assert done.stdout == ""
    assert "Traceback" not in output
    assert PASSWORD not in output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args", STARTERS)
def test_an_unreachable_rabbitmq_is_one_line_and_exit_2(args: list[str]) -> None:
    url = f"amqp://{USER}:{PASSWORD}@127.0.0.1:{free_loopback_port()}/%2F"
    line = _refused(_run(args, BROKER_URL=url), 2, "RabbitMQ broker", "unreachable", "ConnectionRefusedError")
    assert f"amqp://{USER}:***@127.0.0.1:" in line


@pytest.mark.parametrize("args", STARTERS)
@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_a_broker_that_never_answers_is_one_line_and_exit_2(args: list[str], scheme: str) -> None:
    # A port that accepts connections and says nothing: the check gives up after its timeout, it never hangs.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}/"
        _refused(_run(args, BROKER_URL=url), 2, "unreachable", "Timeout")


@pytest.mark.parametrize("args", STARTERS)
@pytest.mark.parametrize("who", ["password", "user"])
def test_a_refused_rabbitmq_login_is_one_line_and_exit_2(args: list[str], who: str,
                                                         rabbitmq: LocalRabbitMQ) -> None:
    url = rabbitmq.url_for(USER, PASSWORD) if who == "password" else rabbitmq.url_for("nobody", PASSWORD)
    _refused(_run(args, BROKER_URL=url), 2, "RabbitMQ broker", "login refused")


@pytest.mark.parametrize("args", STARTERS)
def test_a_refused_redis_broker_login_is_one_line_and_exit_2(args: list[str], redis_url: str) -> None:
    url = redis_url.replace("redis://", f"redis://:{PASSWORD}@")
    _refused(_run(args, BROKER_URL=url), 2, "Redis broker", "login refused")


@pytest.mark.parametrize("args", STARTERS)
@pytest.mark.parametrize(("env", "words"), [
    pytest.param({"REDIS_URL": f"redis+cluster://:{PASSWORD}@127.0.0.1:7000"}, ["REDIS_URL", "Redis Cluster"],
                 id="cluster-redis-url-without-broker-url"),
    pytest.param({"BROKER_URL": f"rediss+cluster://u:{PASSWORD}@127.0.0.1:7000"}, ["BROKER_URL", "Redis Cluster"],
                 id="cluster-broker-url"),
    pytest.param({"BROKER_URL": f"http://u:{PASSWORD}@127.0.0.1:5672"}, ["BROKER_URL", "amqp://"], id="other-scheme"),
])
def test_a_broker_url_that_cannot_work_is_one_line_and_exit_2(args: list[str], env: dict[str, str],
                                                              words: list[str]) -> None:
    _refused(_run(args, **env), 2, *words)


def test_a_message_rabbitmq_cannot_take_is_one_line_and_exit_1(redis_client: redis.Redis) -> None:
    url = f"amqp://{USER}:{PASSWORD}@127.0.0.1:{free_loopback_port()}/%2F"
    _refused(_run(["sync", "acme", "Lead"], BROKER_URL=url), 1, "RabbitMQ broker", "message not sent", "BROKER_URL")


def test_a_good_rabbitmq_passes_the_start_check(rabbitmq: LocalRabbitMQ, redis_client: redis.Redis,
                                                tmp_path: Path) -> None:
    # The check refuses only what is wrong: on a good broker the scheduler starts and runs until stopped.
    log_path = tmp_path / "scheduler.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([CRMSYNC, "scheduler", "--tick", "0.5"], stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "BROKER_URL": rabbitmq.url, "CRMSYNC_LOG_FORMAT": "json"})
    try:
        wait_until(lambda: "scheduler.started" in log_path.read_text() or process.poll() is not None, 60,
                   "the scheduler to start")
        assert process.poll() is None, log_path.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert rabbitmq.password not in log_path.read_text()
