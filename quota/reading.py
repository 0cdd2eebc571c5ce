"""What the meter script answers, decoded in one place for the bucket and for readers that pipeline it.

The script (``scripts/meter.lua``) returns ten integers; ``Reading.parse`` names them and refuses anything else,
so a reply that is an error (a key of the wrong type, say) is never mistaken for a bucket. Or it returns
``{-1, END}``: the daily counter declared was not the open window's, nothing was done, and the call must be
sent again declaring ``crmsync:{T}:w:<END>`` (``needed_window`` reads it; see ``quota.windows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["REASONS", "Reading", "WindowMode", "needed_window"]

WindowMode = Literal["daily", "rolling"]

# The script's reason codes for an invalid tenant (lib/window.lua) and the value each one names.
REASONS = {1: "limit", 2: "reset_at", 3: "reset_from", 4: "reserve", 5: "window", 6: "counter"}
_FIELDS = 10


def needed_window(reply: Any) -> int | None:
    """The window end a meter (``{-1, END}``) reply asks the caller to declare, or ``None`` for any other."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == -1 and type(reply[1]) is int:
        return reply[1]
    return None


@dataclass(frozen=True, slots=True)
class Reading:
    """One meter script reply.

    ``remaining`` includes the reserve; ``window`` is where a take went (the refund identity); ``resets_at`` is
    when the next credits come back (epoch seconds); ``state`` is 0 ok, 1 no limit set, 2 invalid, and
    ``reason`` names the invalid value (a key of ``REASONS``, 0 when valid).
    """

    outcome: int
    remaining: int
    limit: int
    window: int
    used: int
    state: int
    resets_at: int
    reserve: int
    mode: WindowMode
    reason: int

    @classmethod
    def parse(cls, reply: Any) -> Reading | None:
        """The reading in ``reply``, or ``None`` when it is not a meter script reply."""
        if not isinstance(reply, list) or len(reply) != _FIELDS or not all(type(v) is int for v in reply):
            return None
        outcome, remaining, limit, window, used, state, resets_at, reserve, mode, reason = reply
        return cls(outcome, remaining, limit, window, used, state, resets_at, reserve,
                   "rolling" if mode == 1 else "daily", reason)

    @property
    def valid(self) -> bool:
        """The tenant's config and counters are sound (only then may it be granted anything)."""
        return self.state == 0
