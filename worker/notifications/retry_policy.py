"""How long and how often a webhook or email delivery is retried.

A delivery whose attempt failed in a way that proves nothing arrived (the endpoint refused the connection, could
not be reached, its TLS certificate was refused, or it answered busy: 408, 425, 429, 5xx, SMTP 4xx) is tried
again after a delay that doubles from ``first_delay_s`` up to ``max_delay_s``: by default 10 s, 20 s, 40 s ...
42 min 40 s, then every hour. No attempt starts later than ``give_up_after_s`` (24 hours) after the notification
was raised: the delivery whose next attempt would is given up. With the defaults that is 32 attempts, the last
about 23.4 hours in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

__all__ = ["RetryPolicy"]

_MAX_DOUBLINGS = 32  # past this the delay is long capped; keeps 2**n small for any attempt number


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule of a delivery (see the module docstring for the defaults)."""

    first_delay_s: float = 10.0
    max_delay_s: float = 3600.0
    give_up_after_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s or self.give_up_after_s <= 0:
            raise ValueError("retry delays and the give-up bound must be positive, the first no longer than the max")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1 is the first) failed, before the next one."""
        return min(math.ldexp(self.first_delay_s, min(max(attempt - 1, 0), _MAX_DOUBLINGS)), self.max_delay_s)

    def deadline(self, raised_at: datetime) -> float:
        """Epoch seconds after which no attempt starts for a notification raised at ``raised_at``."""
        return raised_at.timestamp() + self.give_up_after_s

