"""quota_warning notifications when a tenant's used credits cross set shares of its daily limit."""

from __future__ import annotations

from dataclasses import dataclass, field

from quota.bucket import Grant
from worker.notifications.notifier import Notifier, quota_warning

__all__ = ["QuotaAlerts"]


@dataclass
class QuotaAlerts:
    """Checks each granted take against the warning shares; each share warns once per tenant and window.

    The notifier deduplicates across processes; the memory here only spares it a Redis round trip on every
    take once a share has been crossed.
    """

    notifier: Notifier
    shares: tuple[float, ...] = (0.8, 0.95)
    _warned: dict[str, tuple[int, set[float]]] = field(default_factory=dict)

    def after_take(self, tenant: str, grant: Grant) -> None:
        """Raise quota_warning for every share the tenant has newly reached in this window."""
        if not grant.granted or not grant.limit:
            return
        used = grant.limit - grant.remaining
        window, warned = self._warned.get(tenant, (grant.window_end, set()))
        if window != grant.window_end:
            warned = set()
        crossed = [share for share in self.shares if used >= share * grant.limit and share not in warned]
        if crossed:
            # A take that passes several shares at once (a tenant starting late in its window) warns once,
            # for the highest: the lower warnings would only repeat it.
            warned.update(crossed)
            quota_warning(tenant, grant, used=used, share=max(crossed)).raise_on(self.notifier)
        self._warned[tenant] = (grant.window_end, warned)
