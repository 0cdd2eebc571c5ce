"""Commands sent many at a time: one pipeline, never a transaction, each command's reply or error on its own.

A non-transactional pipeline is what works on a Redis Cluster too: redis-py's cluster pipeline sends each
command to the node serving its key's slot, so a batch may mix tenants (one slot each) and the global schedule
keys, where a script or a ``MULTI`` could not. Scripts in a batch are sent as bare ``EVALSHA``; one that finds
its script missing (a restarted or failed-over node) has it loaded and is sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from quota.connection import RedisClient as Client
from quota.scripts import LuaScript

__all__ = ["Client", "Command", "send"]

Command = tuple[Any, ...]


def _once(client: Client, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


def send(client: Client, commands: Sequence[Command], scripts: Sequence[LuaScript] = ()) -> list[Any]:
    """Send ``commands`` in one pipeline; return each reply, or the exception that command raised (a
    connection lost mid-batch raises). ``scripts``: the scripts whose ``EVALSHA`` the batch may hold."""
    if not commands:
        return []
    replies = _once(client, commands)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        by_sha = {script.sha: script for script in scripts}
        for sha in {commands[i][1] for i in missing}:
            if sha in by_sha:
                client.execute_command("SCRIPT", "LOAD", by_sha[sha].source)  # type: ignore[no-untyped-call]
        for i, reply in zip(missing, _once(client, [commands[i] for i in missing]), strict=True):
            replies[i] = reply
    return replies
