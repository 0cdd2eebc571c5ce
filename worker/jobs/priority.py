"""Job priority: ``essential`` jobs may spend the reserve a tenant keeps for them; ``normal`` jobs (the default)
stop when only the reserve is left.

A job message carries its priority in its keyword arguments only when it is essential: a message without one
is normal, so normal messages are the same as before priorities existed and workers of any version run them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from worker.errors import InvalidPriority

__all__ = ["DEFAULT_PRIORITY", "PRIORITIES", "Priority", "check_priority", "message_kwargs", "priority_of"]

Priority = Literal["essential", "normal"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
DEFAULT_PRIORITY: Priority = "normal"


def check_priority(value: object) -> Priority:
    """``value`` as a ``Priority``, or ``InvalidPriority`` naming what is allowed."""
    for priority in PRIORITIES:
        if value == priority:
            return priority
    raise InvalidPriority(f"invalid priority {value!r}: use one of {', '.join(PRIORITIES)}")


def priority_of(kwargs: Mapping[str, Any]) -> Priority:
    """The priority a job message's keyword arguments carry (none: normal); ``InvalidPriority`` if malformed."""
    return check_priority(kwargs.get("priority", DEFAULT_PRIORITY))


def message_kwargs(priority: Priority) -> dict[str, Any]:
    """What a job message carries for ``priority``: nothing for the default, so normal messages stay unchanged."""
    return {} if priority == DEFAULT_PRIORITY else {"priority": priority}
