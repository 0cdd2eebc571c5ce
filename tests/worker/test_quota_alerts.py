"""quota_warning: each share of the limit warns once per window, the highest when several pass at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from quota import Grant
from worker.notifications.quota_warnings import QuotaAlerts


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def notify(self, kind: str, tenant: str, message: str, *, window: str, **details: Any) -> None:
        self.calls.append({"kind": kind, "tenant": tenant, "message": message, "window": window, **details})


def grant(used: int, window_end: int = 1_000, limit: int = 100_000) -> Grant:
    return Grant(True, limit - used, limit, datetime.fromtimestamp(window_end, UTC), window_end)


def test_each_share_warns_once_per_window() -> None:
    notifier = Recorder()
    alerts = QuotaAlerts(notifier, (0.8, 0.95))
    for used in (79_999, 80_000, 80_001, 94_999, 95_000, 99_000):
        alerts.after_take("acme", grant(used))
    assert [(c["share"], c["used"], c["window"]) for c in notifier.calls] == [
        (0.8, 80_000, "1000:0.8"), (0.95, 95_000, "1000:0.95")]
    assert "80% warning share" in notifier.calls[0]["message"]
    alerts.after_take("acme", grant(81_000, window_end=87_400))  # a new window warns again
    assert [(c["share"], c["window"]) for c in notifier.calls[2:]] == [(0.8, "87400:0.8")]


def test_passing_several_shares_at_once_warns_for_the_highest() -> None:
    notifier = Recorder()
    alerts = QuotaAlerts(notifier, (0.8, 0.95))
    alerts.after_take("acme", grant(99_000))
    alerts.after_take("acme", grant(99_500))
    assert [c["share"] for c in notifier.calls] == [0.95]


def test_refused_takes_and_unset_limits_do_not_warn() -> None:
    notifier = Recorder()
    alerts = QuotaAlerts(notifier)
    alerts.after_take("acme", Grant(False, 0, 100_000, datetime.fromtimestamp(1_000, UTC), 1_000))
    alerts.after_take("acme", Grant(True, 0, 0, datetime.fromtimestamp(1_000, UTC), 1_000))
    assert notifier.calls == []


def test_a_rolling_tenant_warns_once_a_day_not_every_hour() -> None:
    notifier = Recorder()
    alerts = QuotaAlerts(notifier, (0.8,))
    day = 1_795_910_400  # a UTC midnight
    for hour in range(24):  # a rolling tenant's takes go to a new hour every hour, its usage stays high
        alerts.after_take("acme", replace(grant(85_000, window_end=day + hour * 3600), window="rolling"))
    alerts.after_take("acme", replace(grant(85_000, window_end=day + 86_400), window="rolling"))
    assert [c["window"] for c in notifier.calls] == ["day20786:0.8", "day20787:0.8"]
    assert "of its 100,000 API credits of the last 24 hours" in notifier.calls[0]["message"]
