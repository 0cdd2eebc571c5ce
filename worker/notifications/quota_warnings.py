"""quota_warning notifications when a tenant's used credits cross set shares of its limit."""

from __future__ import annotations

from dataclasses import dataclass, field

from quota.bucket import Grant
from worker.notifications.notifier import Notifier, quota_warning

__all__ = ["QuotaAlerts", "episode"]


def episode(grant: Grant) -> str:
    """What a share warns once in: the daily window, or in rolling mode the UTC day (a rolling tenant's takes go
    to a new hour every hour, and its usage stays high for as long as it keeps spending)."""
    return str(grant.window_end) if grant.window == "daily" else f"day{grant.window_end // 86_400}"


@dataclass
class QuotaAlerts:
    """Checks each granted take against the warning shares; each share warns once per tenant and ``episode``.

    The notifier deduplicates across processes; the memory here only spares it a Redis round trip on every
    take once a share has been crossed.
    """

    notifier: Notifier
    shares: tuple[float, ...] = (0.8, 0.95)
    _warned: dict[str, tuple[str, set[float]]] = field(default_factory=dict)

    def after_take(self, tenant: str, grant: Grant) -> None:
        """Raise quota_warning for every share the tenant has newly reached in this window."""
        if not grant.granted or not grant.limit:
            return
        used = grant.limit - grant.remaining
        current = episode(grant)
        window, warned = self._warned.get(tenant, (current, set()))
        if window != current:
            warned = set()
        crossed = [share for share in self.shares if used >= share * grant.limit and share not in warned]
        if crossed:
            # A take that passes several shares at once (a tenant starting late in its window) warns once,
            # for the highest: the lower warnings would only repeat it.
            warned.update(crossed)
            quota_warning(tenant, grant, used=used, share=max(crossed), episode=current).raise_on(self.notifier)
        self._warned[tenant] = (current, warned)
