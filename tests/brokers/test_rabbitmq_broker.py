"""The RabbitMQ backend's own parts on a real RabbitMQ: long delays in hops, a killed consumer's message handed on,
its settings; and ``BROKER_URL``'s choice and refusals (pure logic)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.common import current_millis

import worker.broker
from quota.urls import redact_url
from tests.conftest import wait_until
from worker.broker import build_broker, send_many
from worker.broker.rabbitmq import BLOCKED_TIMEOUT_S, DUE_OPTION, TX_BATCH, CrmsyncRabbitmqBroker
from worker.broker.redis import CrmsyncRedisBroker
from worker.devstack import rabbitmq_server
from worker.devstack.rabbitmq_server import LocalRabbitMQ
from worker.settings import BrokerSettings

QUEUE = "hops-test"


@pytest.fixture
def hopping(rabbitmq_url: str) -> Iterator[CrmsyncRabbitmqBroker]:
    broker = CrmsyncRabbitmqBroker(url=rabbitmq_url, max_hold_ms=300)
    yield broker
    broker.flush_all()
    broker.close()


def test_a_long_delay_waits_in_hops_and_runs_once_when_due(hopping: CrmsyncRabbitmqBroker) -> None:
    # (when the send returned, what was sent) for each enqueue: a hop's eta is computed inside the send, so it
    # is at most max_hold_ms after the send returned however slowly the send ran.
    sent: list[tuple[int, dramatiq.Message[Any]]] = []
    runs: list[int] = []
    original = hopping.enqueue

    def recording(message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        result = original(message, delay=delay)
        sent.append((current_millis(), result))
        return result

    hopping.enqueue = recording  # type: ignore[method-assign]
    actor: Any = dramatiq.actor(actor_name="hop", queue_name=QUEUE, broker=hopping)(
        lambda: runs.append(current_millis()))
    worker = dramatiq.Worker(hopping, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        before = current_millis()
        actor.send_with_options(delay=1_500)
        wait_until(lambda: runs, 60, "the delayed message to run")
    finally:
        worker.stop()
    assert len(runs) == 1
    assert runs[0] >= before + 1_500, "ran before it was due"
    # Each hop was held at most max_hold_ms; the last one is due when the message is; the last send runs it.
    hops = [(at, m) for at, m in sent if m.queue_name == f"{QUEUE}.DQ"]
    assert len(hops) >= 4, sent
    assert all(m.options["eta"] - at <= 300 for at, m in hops)
    [due] = {m.options[DUE_OPTION] for _, m in hops[:-1]}  # one due time, carried until the last hop
    assert DUE_OPTION not in hops[-1][1].options
    assert hops[-1][1].options["eta"] == due
    assert sent[-1][1].queue_name == QUEUE
    assert DUE_OPTION not in sent[-1][1].options


def test_a_short_delay_is_one_hold(hopping: CrmsyncRabbitmqBroker) -> None:
    message: dramatiq.Message[Any] = dramatiq.Message(queue_name=QUEUE, actor_name="hop", args=(), kwargs={},
                                                      options={DUE_OPTION: 1})  # stale: a new delay replaces it
    sent = hopping.enqueue(message, delay=200)
    assert DUE_OPTION not in sent.options
    assert sent.queue_name == f"{QUEUE}.DQ"


def test_a_dead_consumers_unacked_message_goes_to_another(rabbitmq: LocalRabbitMQ) -> None:
    # What a SIGKILLed worker leaves: a delivery taken and never acknowledged on a connection that drops.
    broker = CrmsyncRabbitmqBroker(url=rabbitmq.url)
    try:
        broker.declare_queue("redeliver-test", ensure=True)
        broker.flush("redeliver-test")
        message = broker.enqueue(dramatiq.Message(queue_name="redeliver-test", actor_name="a", args=(), kwargs={},
                                                  options={}))
        first = broker.consume("redeliver-test", prefetch=1, timeout=100)
        taken = wait_until(lambda: next(first), 30, "the first consumer to take the message")
        assert taken.message_id == message.message_id
        rabbitmq.close_connections()  # the node drops the consumer's connection, as when its worker dies
        second = broker.consume("redeliver-test", prefetch=1, timeout=100)
        again = wait_until(lambda: next(second), 30, "the message to be redelivered")
        assert (again.message_id, again.redelivered) == (message.message_id, True)
        second.ack(again)
        second.close()
    finally:
        broker.close()


def test_a_frozen_consumers_message_goes_to_another_after_the_heartbeat(rabbitmq: LocalRabbitMQ) -> None:
    # A frozen worker (SIGSTOP, a stuck VM) sends no heartbeats: after missing them (heartbeat 2 s here,
    # CRMSYNC_BROKER_HEARTBEAT_TIMEOUT in production) the node drops its connection and redelivers.
    frozen = CrmsyncRabbitmqBroker(url=rabbitmq.url, heartbeat_s=2)
    other = CrmsyncRabbitmqBroker(url=rabbitmq.url)
    try:
        frozen.declare_queue("frozen-test", ensure=True)
        frozen.flush("frozen-test")
        message = frozen.enqueue(dramatiq.Message(queue_name="frozen-test", actor_name="a", args=(), kwargs={},
                                                  options={}))
        first = frozen.consume("frozen-test", prefetch=1, timeout=100)
        assert wait_until(lambda: next(first), 30, "the first consumer to take it").message_id == message.message_id
        # From here the first consumer's connection is never served again, as in a stopped process.
        second = other.consume("frozen-test", prefetch=1, timeout=100)
        again = wait_until(lambda: next(second), 60, "the message to be redelivered")
        assert (again.message_id, again.redelivered) == (message.message_id, True)
        second.ack(again)
        second.close()
    finally:
        other.close()
        frozen.close()


def test_heartbeat_and_blocked_timeout_are_ours_unless_the_url_sets_them(rabbitmq_url: str) -> None:
    one: Any = CrmsyncRabbitmqBroker(url=rabbitmq_url, heartbeat_s=7).parameters
    assert (one.heartbeat, one.blocked_connection_timeout) == (7, BLOCKED_TIMEOUT_S)
    one = CrmsyncRabbitmqBroker(url=f"{rabbitmq_url}?heartbeat=11&blocked_connection_timeout=5",
                                heartbeat_s=7).parameters
    assert (one.heartbeat, one.blocked_connection_timeout) == (11, 5)
    several: Any = CrmsyncRabbitmqBroker(url=f"{rabbitmq_url};{rabbitmq_url}", heartbeat_s=5).parameters
    assert [p.heartbeat for p in several] == [5, 5]


def test_build_broker_chooses_by_scheme() -> None:
    assert isinstance(build_broker(BrokerSettings(url="amqp://u:p@127.0.0.1:1/%2F")), CrmsyncRabbitmqBroker)
    assert isinstance(build_broker(BrokerSettings(url="redis://127.0.0.1:1/0")), CrmsyncRedisBroker)


@pytest.mark.parametrize(("env", "url", "kind"), [
    ({}, "redis://127.0.0.1:6379/0", "redis"),
    ({"REDIS_URL": "rediss://u:p@h:1/0"}, "rediss://u:p@h:1/0", "redis"),
    ({"REDIS_URL": "redis://h:1/0", "BROKER_URL": "amqps://u:p@mq:5671/crm"}, "amqps://u:p@mq:5671/crm", "rabbitmq"),
    ({"REDIS_URL": "redis+cluster://h:1", "BROKER_URL": "amqp://u:p@mq/%2F"}, "amqp://u:p@mq/%2F", "rabbitmq"),
    ({"REDIS_URL": "redis+cluster://h:1", "BROKER_URL": "redis://other:1/0"}, "redis://other:1/0", "redis"),
])
def test_broker_url_chooses_the_broker(env: dict[str, str], url: str, kind: str) -> None:
    settings = BrokerSettings.from_env(env)
    assert (settings.url, settings.kind) == (url, kind)


@pytest.mark.parametrize(("env", "words"), [
    ({"REDIS_URL": "redis+cluster://:pw@h:1"}, "REDIS_URL names a Redis Cluster and BROKER_URL is unset"),
    ({"REDIS_URL": "rediss+cluster://:pw@h:1"}, "REDIS_URL names a Redis Cluster and BROKER_URL is unset"),
    ({"BROKER_URL": "redis+cluster://:pw@h:1"}, "BROKER_URL=redis+cluster://:***@h:1: names a Redis Cluster"),
    ({"BROKER_URL": "kafka://u:pw@h"}, "BROKER_URL=kafka://u:***@h: expected an amqp://"),
    ({"BROKER_URL": "h:5672"}, "BROKER_URL=h:5672: expected"),
])
def test_a_broker_that_cannot_work_is_refused_without_its_password(env: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=r"Redis Cluster|expected") as refused:
        BrokerSettings.from_env(env)
    assert words in str(refused.value)
    assert "pw" not in str(refused.value).replace(words, "")


def test_a_broker_url_is_never_shown_with_its_password() -> None:
    assert redact_url("amqp://u:s3cret@h:1/v?heartbeat=5") == "amqp://u:***@h:1/v?heartbeat=5"
    assert redact_url("amqp://u:a@h;amqp://u:b@k") == "amqp://u:***@h;amqp://u:***@k"
    assert redact_url("amqp://h/%2F") == "amqp://h/%2F"
    assert "s3cret" not in repr(BrokerSettings(url="amqp://u:s3cret@h"))


def test_the_launcher_stops_its_node_and_leaves_nothing_behind(rabbitmq: LocalRabbitMQ) -> None:
    # A second node beside the session's: its own ports, directory and processes, all gone after stop().
    with LocalRabbitMQ() as server:
        assert server.port != rabbitmq.port
        ports, directory = (server.port, server.dist_port, server.epmd_port), str(server.directory)
        pika.BlockingConnection(pika.URLParameters(server.url)).close()
        assert any(directory in cmdline for cmdline in _command_lines())  # the Erlang VM, HOME in its arguments
        assert _listening(server.epmd_port)  # its own epmd
    assert not Path(directory).exists()
    assert not any(directory in cmdline for cmdline in _command_lines())
    assert not any(_listening(port) for port in ports)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        try:
            lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines


def test_send_many_commits_batches_and_survives_a_dropped_connection(rabbitmq: LocalRabbitMQ) -> None:
    broker = CrmsyncRabbitmqBroker(url=rabbitmq.url)
    previous = worker.broker._installed
    worker.broker.install(broker)
    try:
        broker.declare_queue("many-test", ensure=True)
        broker.flush("many-test")
        jobs = [("a", {"n": n}) for n in range(2 * TX_BATCH + 5)]
        send_many("many-test", jobs[:10])
        rabbitmq.close_connections()  # the next batch finds its connection gone
        send_many("many-test", jobs[10:])
        assert broker.get_queue_message_counts("many-test")[0] == len(jobs)
        consumer = broker.consume("many-test", prefetch=len(jobs), timeout=100)
        got = [wait_until(lambda: next(consumer), 30, "a message") for _ in jobs]
        assert sorted(m.kwargs["n"] for m in got) == list(range(len(jobs)))  # each once
        consumer.close()
    finally:
        worker.broker._installed = previous
        if previous is not None:
            dramatiq.set_broker(previous)
        broker.flush_all()
        broker.close()


def test_without_rabbitmq_server_the_reason_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    # What the rabbitmq fixture skips with where the server cannot be had; Debian's /usr/sbin wrapper (which
    # switches to the rabbitmq user) does not count.
    monkeypatch.setattr(rabbitmq_server, "_DEBIAN_SCRIPT", tmp_path / "missing")
    (tmp_path / "sbin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "sbin"))
    with pytest.raises(RuntimeError, match=r"apt-get install rabbitmq-server"):
        rabbitmq_server.find_rabbitmq_server()
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "rabbitmq-server"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert rabbitmq_server.find_rabbitmq_server() == str(script)
