"""NotificationCenter on a real Redis: once per (tenant, kind, window), stream contents and bound, faults."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from tests.conftest import T0, FakeClock
from tests.notifications.conftest import HookServer, metric
from worker import keys
from worker.devstack.redis_server import free_loopback_port
from worker.notifications import KINDS, ChannelStore, NotificationCenter, recent
from worker.notifications.notifier import Notifier

# Spawned processes each raise the same notification once every one of them is ready to.
_RACER = """
import sys
from quota.connection import connect
from worker.notifications import NotificationCenter
client = connect(sys.argv[1])  # one node, or the cluster when tests/cluster runs this
client.incr("crmsync:test:ready")
client.blpop(["crmsync:test:go"], timeout=30)
NotificationCenter(client).notify("quota_exhausted", "acme", "out of credits", window="w1", used=5, limit=5)
"""


def test_every_kind_is_accepted_and_unknown_kinds_are_refused(redis_client: redis.Redis) -> None:
    center: Notifier = NotificationCenter(redis_client)  # what the worker's runtime holds (checked by mypy)
    for kind in sorted(KINDS):
        center.notify(kind, "acme", f"{kind} happened", window="w1")
    assert redis_client.xlen(keys.NOTIFICATIONS) == len(KINDS)
    with pytest.raises(ValueError, match="unknown notification kind 'quota_low'"):
        center.notify("quota_low", "acme", "x", window="w1")
    with pytest.raises(ValueError, match="window"):
        center.notify("job_failed", "acme", "x", window="")
    with pytest.raises(ValueError, match="invalid tenant"):
        center.notify("job_failed", "Not A Tenant", "x", window="w1")
    assert redis_client.xlen(keys.NOTIFICATIONS) == len(KINDS)


def test_once_per_tenant_kind_and_window(redis_client: redis.Redis) -> None:
    center = NotificationCenter(redis_client, dedupe_ttl_s=3600)
    before = metric("quota_exhausted", "none", "deduplicated")
    for _ in range(3):
        center.notify("quota_exhausted", "acme", "out", window="w1")
    center.notify("quota_exhausted", "acme", "out", window="w2")  # a new window
    center.notify("quota_exhausted", "globex", "out", window="w1")  # another tenant
    center.notify("quota_restored", "acme", "back", window="w1")  # another kind
    raised = [(n.tenant, n.kind, n.window) for n in reversed(recent(redis_client, limit=100))]
    assert raised == [("acme", "quota_exhausted", "w1"), ("acme", "quota_exhausted", "w2"),
                      ("globex", "quota_exhausted", "w1"), ("acme", "quota_restored", "w1")]
    assert metric("quota_exhausted", "none", "deduplicated") - before == 2
    ttl = redis_client.ttl(keys.notified("acme", "quota_exhausted", "w1"))
    assert 3500 < ttl <= 3600


def test_many_threads_on_one_empty_bucket_raise_one_notification(redis_client: redis.Redis) -> None:
    center = NotificationCenter(redis_client)
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        center.notify("quota_exhausted", "acme", "out of credits", window="w1", used=5, limit=5)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert redis_client.xlen(keys.NOTIFICATIONS) == 1


def test_many_processes_on_one_empty_bucket_raise_one_notification(redis_url: str,
                                                                   redis_client: redis.Redis) -> None:
    count = 6
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, redis_url]) for _ in range(count)]
    try:
        # Release them together once all are connected, so their SET NX calls race.
        waited = 0
        while int(str(redis_client.get("crmsync:test:ready") or 0)) < count and waited < 600:
            redis_client.blpop(["crmsync:test:never"], timeout=0.05)  # a bounded wait on Redis, not a sleep
            waited += 1
        redis_client.rpush("crmsync:test:go", *range(count))
        assert [p.wait(timeout=60) for p in procs] == [0] * count
    finally:
        for p in procs:
            p.kill()
    entries = recent(redis_client, limit=100)
    assert [(n.kind, n.tenant, n.window) for n in entries] == [("quota_exhausted", "acme", "w1")]


def test_stream_entry_has_every_field(redis_client: redis.Redis, clock: FakeClock) -> None:
    center = NotificationCenter(redis_client, clock=clock)
    resets = datetime(2026, 11, 30, tzinfo=UTC)
    message = ("acme used all 100,000 of its 100,000 daily API credits; credits return at "
               "2026-11-30T00:00:00+00:00; raise the limit with `crmsync quota set acme LIMIT`")
    center.notify("quota_exhausted", "acme", message, window="1795996800", used=100_000, limit=100_000,
                  resets_at=resets, raise_with="crmsync quota set acme LIMIT")
    [(_entry_id, fields)] = redis_client.xrange(keys.NOTIFICATIONS)
    assert set(fields) == {"id", "at", "kind", "tenant", "window", "message", "details"}
    assert len(fields["id"]) == 32
    assert fields["at"] == datetime.fromtimestamp(T0, UTC).isoformat() == "2026-11-29T12:00:00+00:00"
    assert (fields["kind"], fields["tenant"], fields["window"]) == ("quota_exhausted", "acme", "1795996800")
    assert fields["message"] == message
    assert json.loads(fields["details"]) == {"used": 100_000, "limit": 100_000,
                                             "resets_at": "2026-11-30T00:00:00+00:00",
                                             "raise_with": "crmsync quota set acme LIMIT"}
    assert redis_client.get(keys.notified("acme", "quota_exhausted", "1795996800")) == fields["id"]


def test_stream_is_bounded_and_listed_newest_first(redis_client: redis.Redis) -> None:
    center = NotificationCenter(redis_client, stream_maxlen=50)
    for i in range(600):
        center.notify("job_failed", "acme" if i % 2 else "globex", f"job {i} failed", window=f"job-{i}")
    # "~" trims whole stream nodes (100 entries by default), never below the bound.
    assert 50 <= redis_client.xlen(keys.NOTIFICATIONS) <= 150
    assert [n.message for n in recent(redis_client, limit=3)] == ["job 599 failed", "job 598 failed",
                                                                  "job 597 failed"]
    assert [n.message for n in recent(redis_client, "globex", limit=2)] == ["job 598 failed", "job 596 failed"]


def test_tenant_filter_reaches_past_other_tenants(redis_client: redis.Redis) -> None:
    center = NotificationCenter(redis_client)
    center.notify("auth_failed", "rare", "token refused", window="p1")
    for i in range(1200):  # more than one XREVRANGE batch of other tenants' entries
        center.notify("job_failed", "busy", "failed", window=f"job-{i}")
    assert [n.message for n in recent(redis_client, "rare", limit=5)] == ["token refused"]


def test_log_line_and_secrets_kept_out(redis_client: redis.Redis) -> None:
    center = NotificationCenter(redis_client)
    with capture_logs() as logs:
        center.notify("auth_failed", "acme", "refused by https://login.example.test/token?code=SECRET123",
                      window="j1", job_id="j1", password="hunter2-secret", refresh_token="rt-SECRET",
                      error="POST https://u:pw-SECRET@host.test/x?sig=SECRET456 failed")
    [event] = [e for e in logs if e["event"] == "notification"]
    assert event["kind"] == "auth_failed"
    assert event["tenant"] == "acme"
    assert event["log_level"] == "warning"
    assert event["message"] == "refused by https://login.example.test/token?<redacted>"
    assert event["details"] == {"job_id": "j1", "password": "<redacted>", "refresh_token": "<redacted>",
                                "error": "POST https://host.test/x?<redacted> failed"}
    stored = json.dumps(redis_client.xrange(keys.NOTIFICATIONS))
    for secret in ("SECRET", "hunter2", "pw-"):
        assert secret not in stored
        assert secret not in json.dumps(logs, default=str)


def test_redis_down_never_raises_and_still_logs() -> None:
    # No client-side retries: the test is about what notify does with the error, not how long redis-py tries.
    dead = redis.Redis(host="127.0.0.1", port=free_loopback_port(), socket_connect_timeout=1, socket_timeout=1,
                       retry=Retry(NoBackoff(), 0))
    center = NotificationCenter(dead)
    before = metric("job_failed", "stream", "failed")
    with capture_logs() as logs:
        center.notify("job_failed", "acme", "pull Lead failed", window="j9", job_id="j9")
    events = [e["event"] for e in logs]
    assert events == ["notification", "notification_delivery_failed"]
    assert logs[0]["dedupe"] == "unavailable"
    assert logs[0]["message"] == "pull Lead failed"
    assert metric("job_failed", "stream", "failed") - before == 1


def test_broker_failure_never_raises(redis_client: redis.Redis, hook_server: HookServer) -> None:
    ChannelStore(redis_client).add_webhook(hook_server.url + "/hook?token=SECRET")
    sent: list[str] = []

    def broken_send(notification: dict[str, Any], target: str) -> None:
        sent.append(target)
        raise redis.ConnectionError("broker connection refused")

    center = NotificationCenter(redis_client, send=broken_send)
    before = metric("org_limit_exceeded", "webhook", "failed")
    with capture_logs() as logs:
        center.notify("org_limit_exceeded", "acme", "org at 91% of its daily limit", window="p1")
    assert len(sent) == 1
    assert sent[0].startswith("webhook:")
    assert metric("org_limit_exceeded", "webhook", "failed") - before == 1
    assert redis_client.xlen(keys.NOTIFICATIONS) == 1
    assert "SECRET" not in json.dumps(logs, default=str)
