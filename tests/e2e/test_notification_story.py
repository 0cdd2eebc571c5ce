"""The whole story: a tenant drains its bucket, its jobs park, one quota_exhausted notification arrives on every
channel (log, stream, webhook, email), each delivery recorded as done once, an admin raises the limit, and the
jobs resume and finish. The webhook's token is in its path, as chat webhooks have it: no worker log holds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import Tenant, Workers
from tests.notifications.conftest import HookServer, MailServer, hook_server, mail_server  # noqa: F401
from worker import keys
from worker.enqueue import enqueue_pull, wait_for
from worker.notifications import ChannelStore, EmailSettings, recent

SETTLED_DONE = frozenset({"done", "failed", "stopped"})


@pytest.fixture
def channels(redis_url: str, hook_server: HookServer, mail_server: MailServer):  # noqa: F811
    store = ChannelStore(redis.Redis.from_url(redis_url))
    hook = store.add_webhook(f"{hook_server.url}/services/T0/B0/hook-secret-123")
    store.set_email(EmailSettings(host=mail_server.host, port=mail_server.port, sender="crmsync@example.com",
                                  recipients=("ops@example.com",)))
    yield hook_server, mail_server, hook.id
    store.remove_webhook(hook.id)
    store.clear_email()


def crmsync(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("crmsync")
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=dict(os.environ), timeout=60,
                          check=False)


def test_drain_park_notify_raise_resume(workers: Workers, make_tenant, channels, redis_url: str) -> None:
    hooks, mail, hook_id = channels
    tenant: Tenant = make_tenant(records=2_500)
    tenant.bucket.take(tenant.name, 100_000 - 1)
    jobs = [enqueue_pull(tenant.client, tenant.name, sobject) for sobject in ("Lead", "Contact", "Account", "Case")]
    for job_id in jobs:
        record = wait_for(tenant.client, tenant.name, job_id, timeout=120)
        assert record is not None
        assert record.state == "parked"

    def for_tenant(kind: str) -> list[dict[str, object]]:
        return [r["body"] for r in hooks.requests if r["body"].get("tenant") == tenant.name
                and r["body"].get("kind") == kind]

    def mailed(kind: str) -> list[str]:
        return [m["Subject"] for _, m in mail.messages if m["Subject"] == f"[crmsync] {kind}: {tenant.name}"]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (for_tenant("quota_exhausted") and mailed("quota_exhausted")):
        time.sleep(0.05)  # polling for delivery by the worker processes, not waiting for time to pass
    exhausted = [n for n in recent(tenant.client, tenant.name, limit=100) if n.kind == "quota_exhausted"]
    assert len(exhausted) == 1  # many jobs hit the same empty bucket: one notification
    assert "crmsync quota set" in exhausted[0].message
    assert exhausted[0].details["used"] == 100_000
    assert len(for_tenant("quota_exhausted")) == 1
    assert len(mailed("quota_exhausted")) == 1
    for target in (f"webhook:{hook_id}", "email"):
        delivery = tenant.client.hgetall(keys.delivery(tenant.name, exhausted[0].id, target))
        assert (delivery[b"state"], delivery[b"attempts"]) == (b"delivered", b"1")
    # The last credit crossed both warning shares at once: one warning, for the higher share.
    assert [n.details["share"] for n in recent(tenant.client, tenant.name, limit=100)
            if n.kind == "quota_warning"] == [0.95]
    assert "quota_exhausted" in workers.log_text()
    assert "hook-secret-123" not in workers.log_text()

    listed = json.loads(crmsync("notifications", tenant.name, "--json").stdout)
    assert [n["kind"] for n in listed].count("quota_exhausted") == 1
    status = json.loads(crmsync("status", "--json").stdout)
    row = next(r for r in status if r["tenant"] == tenant.name)
    assert (row["paused"], row["pause_reason"], row["parked_jobs"]) == (True, "quota_exhausted", 4)

    raised = crmsync("quota", "set", tenant.name, "150000")
    assert raised.returncode == 0, raised.stderr
    for job_id in jobs:
        record = wait_for(tenant.client, tenant.name, job_id, timeout=120, until=SETTLED_DONE)
        assert record is not None
        assert (record.state, record.records) == ("done", 2_500)
    assert [n.kind for n in recent(tenant.client, tenant.name, limit=100)].count("quota_restored") == 1
    assert tenant.used_credits() - (100_000 - 1) == tenant.counted_requests() == 8
