"""Faults end to end: Salesforce errors, expired tokens, malformed messages, the sandbox -> production rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Message

from emulator import EmulatorServer
from quota import CreditBucket
from quota.errors import QuotaUnavailable
from tests.e2e.conftest import Tenant, Workers
from worker.broker import NAMESPACE, current, send
from worker.enqueue import PULL_ACTOR, QUEUE
from worker.errors import AuthFailed, OrgLimitExceeded
from worker.salesforce.client import CachedTokens, TenantSalesforce
from worker.salesforce.oauth import AccessToken
from worker.salesforce.retry import RetryPolicy
from worker.salesforce.session import MeteredSession


def test_jobs_finish_after_tokens_expire(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=20)
    assert tenant.pull().state == "done"
    tenant.emulator.control.expire_tokens(tenant.org.name)
    tenant.emulator.control.clear_log(tenant.org.name)
    job = tenant.pull("Account")
    assert (job.state, job.records) == ("done", 20)
    api_calls = [e for e in tenant.emulator.control.request_log(tenant.org.name)
                 if e["path"].startswith("/services/data/v")]
    # Whichever worker process ran it (one may still hold the expired token and get a 401 first, which the
    # emulator cannot attribute to the org), every request it made was charged.
    assert job.credits in (len(api_calls), len(api_calls) + 1)
    assert [e["status"] for e in api_calls][-1] == 200


def _fixed_tokens(emulator: EmulatorServer, tenant: Tenant, *, expired: bool) -> CachedTokens:
    class Source:
        def fetch(self) -> AccessToken:
            token = emulator.control.issue_token(tenant.org.name)
            if expired:
                emulator.control.expire_tokens(tenant.org.name)
            return AccessToken(access_token=token, instance_url=tenant.org.instance_url, issued_at=time.time())

        refresh = fetch

    return CachedTokens(Source())


def _client(emulator: EmulatorServer, tenant: Tenant, tokens: CachedTokens,
            sleeps: list[float] | None = None, timeout: float = 130.0) -> TenantSalesforce:
    session = MeteredSession(tenant.name, tenant.bucket, timeout=timeout)
    session.verify = emulator.ca_bundle
    policy = RetryPolicy(sleep=(sleeps if sleeps is not None else []).append)
    return TenantSalesforce(tenant.name, session=session, tokens=tokens, policy=policy)


def test_a_401_refreshes_the_token_once(emulator: EmulatorServer, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=5)
    tokens = _fixed_tokens(emulator, tenant, expired=False)
    sf = _client(emulator, tenant, tokens)
    assert sf.call(lambda s: s.query("SELECT Id FROM Lead"), what="query")["totalSize"] == 5
    emulator.control.expire_tokens(tenant.org.name)
    assert sf.call(lambda s: s.query("SELECT Id FROM Lead"), what="query")["totalSize"] == 5
    assert sf.session.charged == 3  # the refused request was charged: it reached Salesforce
    # The emulator logs only the requests it can attribute to the org, so the 401 is not in its log.
    assert [e["status"] for e in emulator.control.request_log(tenant.org.name)] == [200, 200]


def test_token_refused_after_refresh_raises_auth_failed(emulator: EmulatorServer, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=5)
    sf = _client(emulator, tenant, _fixed_tokens(emulator, tenant, expired=True))
    with pytest.raises(AuthFailed, match="401"):
        sf.call(lambda s: s.query("SELECT Id FROM Lead"), what="query")
    assert sf.session.charged == 2  # the first attempt and the one retry with a fresh token; nothing after


def test_org_daily_limit_is_not_retried_and_parks_the_job(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=5)
    usage = tenant.emulator.control.usage(tenant.org.name)
    tenant.emulator.control.set_usage(tenant.org.name, usage["max"])
    job = tenant.pull()
    assert job.state == "parked"
    assert "daily API request limit" in job.error
    assert job.credits == 1
    queries = [e for e in tenant.emulator.control.request_log(tenant.org.name) if "/query" in e["path"]]
    assert [e["status"] for e in queries] == [403]  # not retried
    assert tenant.counted_requests() == tenant.used_credits() == 1  # failed requests count at Salesforce too


def test_org_limit_error_from_the_client_is_org_limit_exceeded(emulator: EmulatorServer, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=5)
    emulator.control.set_usage(tenant.org.name, emulator.control.usage(tenant.org.name)["max"])
    sleeps: list[float] = []
    sf = _client(emulator, tenant, _fixed_tokens(emulator, tenant, expired=False), sleeps)
    with pytest.raises(OrgLimitExceeded):
        sf.call(lambda s: s.query("SELECT Id FROM Lead"), what="query")
    assert sleeps == []
    assert sf.session.charged == 1


@pytest.mark.parametrize("fault", ["concurrent_limit", "drop", "http500"])
def test_transient_faults_are_retried_and_charged(workers: Workers, make_tenant, fault: str) -> None:
    tenant: Tenant = make_tenant(records=30)
    tenant.emulator.control.inject_fault(tenant.org.name, fault, count=1)
    job = tenant.pull()
    assert (job.state, job.records, job.credits) == ("done", 30, 2)
    assert tenant.counted_requests() == 2


def test_added_latency_only_slows_the_job(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=30)
    tenant.emulator.control.set_faults(tenant.org.name, latency=0.3)
    job = tenant.pull()
    tenant.emulator.control.clear_faults(tenant.org.name)
    # Slow answers are still answers: nothing retried, nothing charged twice.
    assert (job.state, job.records, job.credits) == ("done", 30, 1)
    assert tenant.counted_requests() == 1
    assert [e["latency"] for e in tenant.emulator.control.request_log(tenant.org.name) if e["counted"]] == [0.3]


def test_a_reply_slower_than_the_request_timeout_is_retried_and_charged(
    emulator: EmulatorServer, make_tenant
) -> None:
    tenant: Tenant = make_tenant(records=5)
    sleeps: list[float] = []
    sf = _client(emulator, tenant, _fixed_tokens(emulator, tenant, expired=False), sleeps, timeout=2.0)
    emulator.control.inject_fault(tenant.org.name, "latency", count=1, latency=60.0)
    assert sf.call(lambda s: s.query("SELECT Id FROM Lead"), what="query")["totalSize"] == 5
    assert len(sleeps) == 1  # one retry, after the backoff the policy chose
    # The timed-out request reached Salesforce and was counted there, so its credit stays spent.
    assert sf.session.charged == 2
    assert sf.session.refunded == 0
    assert tenant.counted_requests() == 2
    assert tenant.used_credits() == 2


def test_retries_are_bounded_and_the_job_fails(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=3)
    tenant.emulator.control.inject_fault(tenant.org.name, "http503", count=1_000)
    job = tenant.pull(timeout=180)
    tenant.emulator.control.clear_faults(tenant.org.name)
    assert job.state == "failed"
    assert "503" in job.error
    # 5 attempts a try, 4 tries (the first and 3 Dramatiq retries), each attempt charged and counted.
    assert job.credits == 20
    assert tenant.counted_requests() == 20


def _decoded(raw: bytes) -> dict[str, Any] | None:
    # Other tests dead-letter entries that are not JSON at all.
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def test_malformed_messages_are_dead_lettered_and_do_not_block_the_queue(
    workers: Workers, make_tenant, redis_url: str
) -> None:
    tenant: Tenant = make_tenant(records=4)
    client = redis.Redis.from_url(redis_url)
    malformed: list[dict[str, Any]] = [
        {"tenant": tenant.name, "sobject": "Lead WHERE Id != null", "job_id": "x"},
        {"tenant": "Bad{Tenant}", "sobject": "Lead", "job_id": "x"},
        {"tenant": tenant.name, "sobject": "Lead", "job_id": "x", "fields": ["Id, (SELECT Id FROM Contacts)"]},
        {"tenant": tenant.name, "sobject": "Lead"},
        {"tenant": tenant.name, "sobject": "Lead", "job_id": 7},
    ]
    positional: Message[Any] = Message(queue_name=QUEUE, actor_name=PULL_ACTOR, args=("positional",), kwargs={},
                                       options={})
    bad = [current().enqueue(positional), *(send(QUEUE, PULL_ACTOR, kwargs) for kwargs in malformed)]
    assert tenant.pull().records == 4  # queued after the bad ones, and not blocked by them
    expected = {m.message_id for m in bad}
    deadline = time.monotonic() + 60
    dead: set[str] = set()
    while time.monotonic() < deadline and not expected <= dead:
        stored = client.hvals(f"{NAMESPACE}:{QUEUE}.XQ.msgs")
        dead = {m["message_id"] for m in (_decoded(raw) for raw in stored) if m}
        time.sleep(0.05)  # polling for the workers to finish, not waiting for time to pass
    assert expected <= dead
    assert tenant.counted_requests() == 1


def _crmsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("crmsync")
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_sandbox_then_production_but_never_back(emulator: EmulatorServer, redis_url: str, tmp_path: Path) -> None:
    sandbox = emulator.control.add_org("rule-sandbox", environment="sandbox")
    production = emulator.control.add_org("rule-production")
    env = {**os.environ, "REDIS_URL": redis_url}
    for org in (sandbox, production):
        (tmp_path / org.name).write_text(org.client_secret)

    def connect(org_name: str, environment: str, client_id: str) -> subprocess.CompletedProcess[str]:
        return _crmsync("connect", "rule-tenant", "--environment", environment, "--login-url", emulator.base_url,
                        "--client-id", client_id, "--client-secret-file", str(tmp_path / org_name),
                        "--ca-bundle", emulator.ca_bundle, env=env)

    assert connect(sandbox.name, "sandbox", sandbox.client_id).returncode == 0
    assert connect(production.name, "production", production.client_id).returncode == 0
    refused = connect(sandbox.name, "sandbox", sandbox.client_id)
    assert refused.returncode == 2
    assert "production" in refused.stderr
    assert "Traceback" not in refused.stderr
    listed = json.loads(_crmsync("connections", "--json", env=env).stdout)
    row = next(c for c in listed if c["tenant"] == "rule-tenant")
    assert (row["environment"], row["client_id"]) == ("production", production.client_id)
    everything = _crmsync("connections", env=env).stdout + json.dumps(listed)
    assert sandbox.client_secret not in everything
    assert production.client_secret not in everything


def test_sync_wait_prints_the_outcome(workers: Workers, make_tenant, redis_url: str) -> None:
    tenant: Tenant = make_tenant(records=7)
    done = _crmsync("sync", tenant.name, "Contact", "--wait", "--json", env={**os.environ, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["state"], outcome["records"], outcome["credits"]) == ("done", 7, 1)


def test_sync_refuses_soql_injection_before_queueing(redis_url: str) -> None:
    done = _crmsync("sync", "acme", "Lead WHERE Name != ''", env={**os.environ, "REDIS_URL": redis_url})
    assert done.returncode == 2
    assert "invalid object" in done.stderr


def test_metered_requests_fail_closed_when_redis_is_down(emulator: EmulatorServer) -> None:
    org = emulator.control.add_org("closed")
    session = MeteredSession("closed", CreditBucket.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1))
    session.verify = emulator.ca_bundle
    with pytest.raises(QuotaUnavailable):
        session.get(f"{org.instance_url}/services/data/v59.0/limits/",
                    headers={"Authorization": f"Bearer {org.access_token}"})
    assert emulator.control.request_log("closed") == []
    # Requests Salesforce does not count are not metered, so they do not need Redis.
    assert session.get(f"{org.instance_url}/services/data/").status_code == 200
