"""How a quota pause is worded: whether only normal jobs wait (the reserve is left for essential ones) or all do,
in the tenant's window mode, with the details a webhook reads."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from quota import CreditBucket
from tests.conftest import T0, FakeClock
from worker.notifications import NotificationCenter, recent
from worker.notifications.notifier import quota_exhausted, quota_restored

RESETS = datetime(2026, 11, 30, tzinfo=UTC)


def test_only_the_reserve_left_says_essential_jobs_go_on(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=2_000)
    assert bucket.take("acme", 98_000).granted
    notice = quota_exhausted("acme", bucket.status("acme"), RESETS, reserve_only=True)
    assert notice.message == (
        "tenant acme used its daily API credits for normal jobs (98,000 of 100,000); the rest, 2,000, is the reserve "
        "kept for essential jobs, which go on; its normal jobs are paused and resume by themselves when credits "
        "return at 2026-11-30T00:00:00+00:00, or as soon as the limit is raised with `crmsync quota set acme LIMIT`")
    assert notice.details == {"used": 98_000, "limit": 100_000, "resets_at": RESETS.isoformat(),
                              "raise_with": "crmsync quota set acme LIMIT", "reserve": 2_000, "remaining": 2_000,
                              "window_mode": "daily", "paused": "normal"}
    # The reserve running dry later in the window is a notification of its own.
    everything = quota_exhausted("acme", bucket.status("acme"), RESETS)
    assert notice.window != everything.window == str(int(RESETS.timestamp()))
    center = NotificationCenter(redis_client)
    notice.raise_on(center)
    everything.raise_on(center)
    raised = recent(redis_client, "acme")
    assert [(n.kind, n.details["paused"]) for n in raised] == [("quota_exhausted", "all"),
                                                                ("quota_exhausted", "normal")]


def test_a_rolling_tenant_out_of_everything_says_all_jobs_wait(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", window="rolling", reserve=2_000)
    assert bucket.take("acme", 100_000, essential=True).granted
    status = bucket.status("acme")
    notice = quota_exhausted("acme", status, status.resets_at)
    assert notice.message.startswith("tenant acme used its API credits of the last 24 hours, its reserve for "
                                     "essential jobs included (100,000 of 100,000); all its jobs are paused and "
                                     "resume by themselves when credits return at 2026-11-30T13:00:00+00:00")
    details = notice.details
    assert (details["window_mode"], details["paused"], details["reserve"]) == ("rolling", "all", 2_000)
    assert status.resets_at.timestamp() == T0 + 25 * 3600


def test_the_restored_notice_says_what_normal_jobs_may_take(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=2_000)
    notice = quota_restored("acme", bucket.status("acme"), resumed=3, since=T0)
    assert notice.details == {"remaining": 100_000, "limit": 100_000, "resumed_jobs": 3, "reserve": 2_000,
                              "available": 98_000}
