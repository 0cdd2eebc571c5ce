"""A Redis broker whose consumers dead-letter a queue entry that is not a valid message.

Dramatiq's Redis consumer raises ``DecodeError`` on such an entry and restarts, leaving it unacked in the
worker's ack set (with whatever it prefetched alongside) for as long as the worker lives. Here the entry goes
to the dead-letter queue and the consumer carries on.
"""

from __future__ import annotations

from typing import Any

import structlog
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import DecodeError

__all__ = ["CrmsyncRedisBroker"]

log = structlog.get_logger("crmsync.broker")


class _Consumer(_RedisConsumer):
    def __next__(self) -> Any:
        while True:
            try:
                return super().__next__()  # type: ignore[no-untyped-call]
            except DecodeError as exc:
                self._dead_letter(exc.data)

    def _dead_letter(self, data: Any) -> None:
        # The entry's id is only known to Redis (it is not in a body that does not decode): find it by content.
        messages = f"{self.broker.namespace}:{self.queue_name}.msgs"
        for message_id, body in self.broker.client.hscan_iter(messages, count=500):
            if body == data:
                self.broker.do_nack(self.queue_name, message_id)
                log.warning("undecodable_message_dead_lettered", queue=self.queue_name, redis_id=str(message_id))
                return
        log.warning("undecodable_message_not_found", queue=self.queue_name)


class CrmsyncRedisBroker(RedisBroker):
    """Dramatiq's Redis broker with consumers that dead-letter undecodable entries."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        """The consumer class this broker's ``consume`` builds."""
        return _Consumer
