"""A redis-py client that counts its round trips: each command sent alone and each pipeline executed is one."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis
from redis.client import Pipeline


class CountingPipeline(Pipeline):
    """A pipeline that reports each ``execute`` (one round trip, however many commands) to its client."""

    counter: Counter[str]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        self.counter["round_trips"] += 1
        self.counter["commands"] += len(self.command_stack)
        for args, _ in self.command_stack:
            self.counter[str(args[0]).upper()] += 1
        return super().execute(raise_on_error)


class CountingRedis(redis.Redis):
    """``redis.Redis`` whose ``counter`` holds ``round_trips``, ``commands`` and a count per command name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counter: Counter[str] = Counter()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.counter["round_trips"] += 1
        self.counter["commands"] += 1
        self.counter[str(args[0]).upper()] += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.counter = self.counter
        return pipe
