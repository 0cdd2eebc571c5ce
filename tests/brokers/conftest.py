"""One broker fixture over both brokers: the same scenarios run on Dramatiq's Redis broker and on RabbitMQ.

State (credits, jobs, pauses, parked jobs) is always on the session's Redis; only ``BROKER_URL`` changes: the
session Redis itself (``redis://``) or the session RabbitMQ (``amqp://``). Worker pools, tenants and the emulator
come from the fault tests' fixtures (``tests/faults/conftest.py``). This process sends its messages through the
broker under test for the length of the test (``worker.broker``'s installed broker is swapped and restored).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dramatiq
import pika
import pika.exceptions
import pytest
import redis

import worker.broker
from tests.faults.conftest import emulator, secrets_dir, start_pool, worker_environment
from worker.broker import NAMESPACE, build_broker
from worker.enqueue import QUEUE
from worker.settings import BrokerSettings

__all__ = [  # with the fixtures these tests use
    "BrokerUnderTest", "broker", "emulator", "purge_rabbitmq", "secrets_dir", "sending_through", "start_pool",
]

# Every queue a pool declares: the jobs' and the notification deliveries', each with its delay and dead letters.
_QUEUES = [f"{name}{suffix}" for name in (QUEUE, "crmsync-notify") for suffix in ("", ".DQ", ".XQ")]


@dataclass
class BrokerUnderTest:
    """The broker a test runs on: ``kind`` (``redis`` or ``rabbitmq``), its URL, and a look inside it."""

    kind: str
    url: str
    redis_url: str

    def env(self, data_dir: Path, **extra: str) -> dict[str, str]:
        """A worker pool's environment on this broker (state on the session Redis)."""
        return worker_environment(self.redis_url, data_dir, BROKER_URL=self.url, **extra)

    def dead_letters(self) -> list[bytes]:
        """The bodies in the jobs' dead-letter queue (``crmsync.XQ``), left there."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            try:
                return cast(list[bytes], client.hvals(f"{NAMESPACE}:{QUEUE}.XQ.msgs"))
            finally:
                client.close()
        bodies: list[bytes] = []
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            while True:
                method, _properties, body = channel.basic_get(f"{QUEUE}.XQ", auto_ack=False)
                if method is None:
                    break
                bodies.append(body)
        finally:
            connection.close()  # unacknowledged: they go back to the queue
        return bodies

    def dead_message_ids(self) -> set[str]:
        """The ids of the messages in the dead-letter queue that decode as messages."""
        ids = set()
        for body in self.dead_letters():
            try:
                data: Any = json.loads(body)
            except ValueError:
                continue
            if isinstance(data, dict) and "message_id" in data:
                ids.add(str(data["message_id"]))
        return ids

    def put_raw(self, body: bytes) -> None:
        """Put ``body`` on the jobs' queue as it is, bypassing Dramatiq (a message that does not decode)."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            client.hset(f"{NAMESPACE}:{QUEUE}.msgs", "raw-entry", body)  # type: ignore[arg-type]
            client.rpush(f"{NAMESPACE}:{QUEUE}", "raw-entry")
            client.close()
            return
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            connection.channel().basic_publish(exchange="", routing_key=QUEUE, body=body)
        finally:
            connection.close()


@contextmanager
def sending_through(broker_url: str, redis_url: str) -> Iterator[dramatiq.Broker]:
    """This process sends its messages through the broker at ``broker_url`` inside the block (``worker.broker``'s
    installed broker is swapped, then restored: later tests send through the session's)."""
    previous = worker.broker._installed
    sender = worker.broker.install(build_broker(BrokerSettings.from_env({"REDIS_URL": redis_url,
                                                                         "BROKER_URL": broker_url})))
    try:
        yield sender
    finally:
        sender.close()
        worker.broker._installed = previous
        if previous is not None:
            dramatiq.set_broker(previous)


def purge_rabbitmq(url: str) -> None:
    """Empty every queue a pool declares on the RabbitMQ at ``url`` (the session's is shared by the tests)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in _QUEUES:
            try:
                channel.queue_purge(name)
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet (404): nothing to purge
                channel = connection.channel()
    finally:
        connection.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_url: str, redis_client: redis.Redis) -> Iterator[BrokerUnderTest]:
    """The broker under test, empty, and this process sending through it (``redis_client`` flushed Redis)."""
    if request.param == "rabbitmq":
        url = str(request.getfixturevalue("rabbitmq_url"))
        purge_rabbitmq(url)
    else:
        url = redis_url
    with sending_through(url, redis_url):
        yield BrokerUnderTest(str(request.param), url, redis_url)
