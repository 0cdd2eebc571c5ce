"""The one way Lua scripts are loaded and run, in every package: one ``EVALSHA`` round trip, loading the
script only when Redis lacks it.

redis-py's ``Script`` wrapper costs about a fifth of the throughput of a raw round trip; the metering
script is on every Salesforce request's path, so it is sent as a bare ``EVALSHA`` through whatever sends
commands: ``Redis.execute_command``, or a ``DirectConnections`` on the hot path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis

__all__ = ["CONFIGURE", "METER", "Execute", "LuaScript"]

Execute = Callable[..., Any]
"""Sends one Redis command and returns its reply: ``Redis.execute_command`` or ``DirectConnections.execute``."""


_INCLUDE = re.compile(r"^-- include: (\S+\.lua)$", re.M)


class LuaScript:
    """A Lua script shipped as ``scripts/<name>.lua`` in ``package`` (``quota`` for the bucket's, ``worker``
    for the worker's), run by its SHA1. Every script file starts with a ``KEYS:`` / ``ARGV:`` header.

    A line ``-- include: lib/NAME.lua`` is replaced by that file (from the same ``scripts`` folder): Redis
    scripts cannot import, and the bucket's scripts must read a tenant's config and windows the same way.
    """

    def __init__(self, name: str, package: str = "quota") -> None:
        self.name = name
        folder = resources.files(package).joinpath("scripts")
        source = folder.joinpath(f"{name}.lua").read_text("utf-8")
        self.source = _INCLUDE.sub(lambda m: folder.joinpath(m.group(1)).read_text("utf-8"), source)
        self.sha = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()

    def command(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command running the script with ``keys`` and ``args``, for a pipeline (which cannot
        load a missing script: send ``SCRIPT LOAD`` first)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def __call__(self, execute: Execute, keys: list[str], args: list[Any]) -> Any:
        """Run the script through ``execute`` with ``keys`` and ``args``."""
        try:
            return execute(*self.command(keys, args))
        except redis.exceptions.NoScriptError:
            execute("SCRIPT", "LOAD", self.source)
            return execute(*self.command(keys, args))


METER = LuaScript("meter")
CONFIGURE = LuaScript("configure")
