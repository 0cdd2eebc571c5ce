"""Which daily counter key a meter or configure script call declares.

A daily window's counter is ``crmsync:{T}:w:<END>`` (``quota.keys.daily_counter``), and only the script knows
``END`` for sure (it reads the tenant's reset time and the server's clock). Every key a script touches is
declared in its KEYS (Redis Cluster requires it), so the caller declares the counter it believes open: the
end learnt from the tenant's previous reply, else the next UTC midnight. When the guess is wrong the script
writes nothing and answers with the end it needs (``quota.reading.needed_window``), and the caller sends the
call again with it: one extra round trip per tenant, window and process.
"""

from __future__ import annotations

import math

__all__ = ["DAILY_ENDS", "DAY", "DailyEnds"]

DAY = 86400


class DailyEnds:
    """Each tenant's daily window end as last seen by this process (at most ``max_tenants``; forgotten all at
    once past that, which costs each tenant one extra round trip at most)."""

    def __init__(self, max_tenants: int = 200_000) -> None:
        self._ends: dict[str, int] = {}
        self._max = max_tenants

    def guess(self, tenant: str, now: float) -> int:
        """The end of the tenant's window open at ``now`` (epoch seconds) as far as this process knows."""
        end = self._ends.get(tenant)
        if end is None:
            return int(now - now % DAY + DAY)  # the default reset, 00:00 UTC
        if now >= end:
            # Later windows last a day each (only a changed reset time makes one longer).
            end += DAY * (math.floor((now - end) / DAY) + 1)
        return end

    def learn(self, tenant: str, end: int) -> None:
        """Remember the end a script reported for ``tenant``'s open window."""
        if len(self._ends) >= self._max and tenant not in self._ends:
            self._ends.clear()
        self._ends[tenant] = end

    def forget(self, tenant: str) -> None:
        """Drop what is known of ``tenant`` (its reset time changed)."""
        self._ends.pop(tenant, None)


DAILY_ENDS = DailyEnds()
"""The process's memory, shared by every bucket and by readers that pipeline the meter script."""
