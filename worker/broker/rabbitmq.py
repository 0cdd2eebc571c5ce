"""A RabbitMQ broker (``BROKER_URL=amqp://...``): Dramatiq's, with publisher confirms, a heartbeat from our settings,
and long delays held in hops.

What Dramatiq's RabbitMQ broker already gives, and the Redis backend had to add or tune:

- An undecodable message is nacked without requeue, so RabbitMQ dead-letters it into ``<queue>.XQ`` (each queue's
  dead-letter exchange routes there), and the consumer carries on.
- A message that fails for good (``InvalidJob``, or the last retry) is nacked into ``<queue>.XQ`` too, where it
  is kept for ``dramatiq_dead_message_ttl`` (7 days; a queue-wide ``x-message-ttl``).
- A message is acknowledged only once its job ends, so when a worker dies its connection drops and RabbitMQ hands
  its unacknowledged messages to another worker at once (a frozen worker: once two heartbeats are missed).
- Delayed messages (re-sends, retries, resumed jobs) wait in ``<queue>.DQ``; a worker takes them, holds them
  unacknowledged until they are due, then queues them and acknowledges.

Added here:

- **Publisher confirms** (``confirm_delivery``): ``enqueue`` returns once RabbitMQ has the message, as the Redis
  broker's returns once Redis has it. A job is recorded as queued in Redis before its message is sent; an
  unconfirmed message lost in a dropped connection would leave it queued forever.
- **Heartbeat**: ``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT`` unless the URL sets ``heartbeat``, so a frozen worker's
  messages move on in about the time they do on the Redis broker.
- **Batches in transactions** (``enqueue_many``, what ``send_many`` uses, so the scheduler): a confirm per
  message costs a round trip each (about 360 messages/s here); a transaction per 1,000 messages, about 4,400/s.
- **Blocked publishers time out**: a node under a memory or disk alarm blocks publishers; after
  ``BLOCKED_TIMEOUT_S`` (60 s, unless the URL sets ``blocked_connection_timeout``) the send fails instead of
  hanging.
- **Hops for long delays**: RabbitMQ closes a channel that holds a delivery unacknowledged longer than its
  ``consumer_timeout`` (30 minutes by default), which a delayed message would (a notification's retry waits up
  to an hour). A delay longer than ``max_hold_ms`` (10 minutes) is sent as a hop of ``max_hold_ms`` carrying
  the message's real due time in option ``crmsync_due``; when the hop comes due the worker queues it again
  (``enqueue`` without a delay), and ``enqueue`` sends it on as the next hop until it is due.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import MAX_ENQUEUE_ATTEMPTS, RabbitmqBroker
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed

__all__ = [
    "BLOCKED_TIMEOUT_S", "DUE_OPTION", "MAX_HOLD_MS", "TX_BATCH", "CrmsyncRabbitmqBroker", "connection_parameters",
]

# pika logs every failed connection attempt at ERROR, with tracebacks, on top of the exception it raises; Dramatiq
# reports a consumer's connection error in one line, and the entry points report the rest (one line, exit code).
logging.getLogger("pika").setLevel(logging.CRITICAL)

# Well under RabbitMQ's default consumer_timeout of 30 minutes.
MAX_HOLD_MS = 10 * 60 * 1000
DUE_OPTION = "crmsync_due"
# Messages per transaction in ``enqueue_many``.
TX_BATCH = 1000
# A node short of memory or disk blocks publishers; past this a send fails (and is retried, then reported)
# instead of hanging the scheduler or a job forever.
BLOCKED_TIMEOUT_S = 60.0


class CrmsyncRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker with publisher confirms, our heartbeat and long delays held in hops."""

    def __init__(self, *, url: str, heartbeat_s: float | None = None, max_hold_ms: int = MAX_HOLD_MS,
                 **options: Any) -> None:
        super().__init__(url=url, confirm_delivery=True, **options)
        # One URL, or several separated by ';' (the nodes of a RabbitMQ cluster, tried in turn).
        nodes = self.parameters if isinstance(self.parameters, list) else [self.parameters]
        for node, node_url in zip(nodes, url.split(";"), strict=True):
            query = node_url.partition("?")[2]
            if heartbeat_s is not None and "heartbeat=" not in query:
                node.heartbeat = max(1, round(heartbeat_s))
            if "blocked_connection_timeout=" not in query:
                node.blocked_connection_timeout = BLOCKED_TIMEOUT_S
        self.max_hold_ms = max_hold_ms

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Send ``message`` (after ``delay`` ms, in hops of at most ``max_hold_ms``); return what was sent."""
        due = message.options.get(DUE_OPTION)
        if delay is None and isinstance(due, int | float):
            delay = int(due - current_millis())  # a hop came due: the rest of the wait, if any
            if delay <= 0:
                delay = None
        options = {name: value for name, value in message.options.items() if name != DUE_OPTION}
        if delay is not None and delay > self.max_hold_ms:
            options[DUE_OPTION] = current_millis() + delay
            delay = self.max_hold_ms
        if options != message.options:
            message = dataclasses.replace(message, options=options)
        return super().enqueue(message, delay=delay)

    def enqueue_many(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        """Send ``messages`` (none delayed) in transactions of ``TX_BATCH``: one round trip per batch instead of a
        confirm per message (about 12x the rate). Returns once RabbitMQ has committed them all; a connection
        error is retried as Dramatiq's ``enqueue`` retries it, then raises ``ConnectionClosed`` (a batch whose
        commit was cut off may then have been sent, in part or in full, a second time: at least once)."""
        for queue_name in {message.queue_name for message in messages}:
            self.declare_queue(queue_name, ensure=True)
        for start in range(0, len(messages), TX_BATCH):
            batch = messages[start:start + TX_BATCH]
            for attempt in range(1, MAX_ENQUEUE_ATTEMPTS + 1):
                try:
                    self._commit(batch)
                    break
                except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                    self._drop_tx_channel()
                    if attempt == MAX_ENQUEUE_ATTEMPTS:
                        raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _commit(self, batch: Sequence[dramatiq.Message[Any]]) -> None:
        channel = self._tx_channel()
        for message in batch:
            self.emit_before("enqueue", message, None)
            channel.basic_publish(exchange="", routing_key=message.queue_name, body=message.encode(),
                                  properties=pika.BasicProperties(delivery_mode=2))
        channel.tx_commit()
        for message in batch:
            self.emit_after("enqueue", message, None)

    def _tx_channel(self) -> Any:
        # A transactional channel of this thread's connection, beside Dramatiq's confirming one.
        channel = getattr(self.state, "tx_channel", None)
        if channel is None or not channel.is_open:
            channel = self.connection.channel()
            channel.tx_select()
            self.state.tx_channel = channel
        return channel

    def _drop_tx_channel(self) -> None:
        self.state.tx_channel = None
        del self.connection  # Dramatiq's: closes this thread's connection and channel, the next call opens new


def connection_parameters(url: str, timeout_s: float) -> pika.URLParameters:
    """Parameters for one quick connection to ``url``: one attempt, ``timeout_s`` for each step."""
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout_s
    parameters.stack_timeout = timeout_s
    parameters.blocked_connection_timeout = timeout_s
    return parameters
