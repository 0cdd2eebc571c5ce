"""Pause and resume end to end: real workers park jobs when credits run out and resume them by themselves."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from quota import CreditBucket
from tests.e2e.conftest import Tenant, Workers
from worker import keys
from worker.cli.status import tenant_rows
from worker.enqueue import enqueue_pull, enqueue_push, wait_for
from worker.jobs.parking import PauseStore
from worker.notifications import recent


def delivered_ids(workers: Workers, tenant: Tenant, sobject: str) -> list[str]:
    path = workers.data_dir / tenant.name / f"{sobject}.jsonl"
    return [json.loads(line)["Id"] for line in path.read_text().splitlines()] if path.exists() else []


def wait_all(tenant: Tenant, job_ids: list[str], until: frozenset[str], timeout: float = 120) -> list[Any]:
    return [wait_for(tenant.client, tenant.name, job_id, timeout=timeout, until=until) for job_id in job_ids]


def test_jobs_park_when_credits_run_out_and_resume_when_the_limit_is_raised(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=5_000)
    tenant.bucket.take(tenant.name, 100_000 - 2)
    rows = [{"External_Id__c": f"p-{i}", "Name": f"Campaign {i}"} for i in range(300)]
    jobs = [enqueue_pull(tenant.client, tenant.name, "Lead"), enqueue_pull(tenant.client, tenant.name, "Contact"),
            enqueue_pull(tenant.client, tenant.name, "Account"),
            enqueue_push(tenant.client, tenant.name, "Campaign", rows, "External_Id__c")]
    parked = wait_all(tenant, jobs, frozenset({"parked"}))
    assert [job.state for job in parked] == ["parked"] * 4
    pauses = PauseStore(tenant.client)
    state = pauses.get(tenant.name)
    assert state is not None
    assert state.reason == "quota_exhausted"
    assert pauses.parked_count(tenant.name) == 4
    row = next(r for r in tenant_rows(tenant.bucket) if r["tenant"] == tenant.name)
    assert (row["paused"], row["pause_reason"], row["parked_jobs"], row["remaining"]) == (
        True, "quota_exhausted", 4, 0)
    assert tenant.counted_requests() == 2  # nothing was sent without a credit

    tenant.bucket.set_limit(tenant.name, 200_000, actor="admin")
    done = wait_all(tenant, jobs, frozenset({"done", "failed", "stopped"}))
    assert [job.state for job in done] == ["done"] * 4
    assert pauses.get(tenant.name) is None
    assert pauses.parked_count(tenant.name) == 0
    for sobject in ("Lead", "Contact", "Account"):
        ids = delivered_ids(workers, tenant, sobject)
        assert len(ids) == len(set(ids)) == 5_000, sobject
    assert done[3].records == 300
    # Every request was paid for, and nothing more: 3 + 3 + 3 pages, 2 collections.
    assert tenant.used_credits() - (100_000 - 2) == tenant.counted_requests() == 11


def test_nothing_is_lost_across_a_pause(workers: Workers, make_tenant) -> None:
    tenants: list[Tenant] = [make_tenant(records=40) for _ in range(3)]
    objects = ["Lead", "Contact", "Account", "Opportunity", "Campaign", "Case"]
    jobs: dict[str, list[str]] = {}
    for tenant in tenants:
        tenant.bucket.take(tenant.name, 100_000 - 2)
        jobs[tenant.name] = [enqueue_pull(tenant.client, tenant.name, sobject) for sobject in objects]
    for tenant in tenants:
        wait_all(tenant, jobs[tenant.name], frozenset({"parked", "done"}))
        tenant.bucket.set_limit(tenant.name, 100_010, actor="admin")
    for tenant in tenants:
        done = wait_all(tenant, jobs[tenant.name], frozenset({"done", "failed", "stopped"}))
        assert Counter(job.state for job in done) == {"done": 6}
        for sobject in objects:
            ids = delivered_ids(workers, tenant, sobject)
            assert len(ids) == len(set(ids)) == 40, (tenant.name, sobject)
        assert tenant.counted_requests() == 6
        assert tenant.used_credits() == 100_000 - 2 + 6


def test_org_near_its_own_limit_pauses_and_resumes_below_the_lower_share(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=10)
    org = tenant.org.name
    usage = tenant.emulator.control.usage(org)
    tenant.emulator.control.set_usage(org, int(usage["max"] * 0.92))
    first = tenant.pull("Lead")  # succeeds, and Salesforce reports 92% used
    assert first.state == "done"
    second = tenant.pull("Contact")
    assert second.state == "parked"
    state = PauseStore(tenant.client).get(tenant.name)
    assert state is not None
    assert state.reason == "org_limit"
    queries = [e for e in tenant.emulator.control.request_log(org) if "/query" in e["path"]]
    assert len(queries) == 1  # the guard stopped the second job before it sent anything
    tenant.emulator.control.set_usage(org, int(usage["max"] * 0.5))  # the customer's other usage ages out
    resumed = wait_for(tenant.client, tenant.name, second.job_id, timeout=120,
                       until=frozenset({"done", "failed", "stopped"}))
    assert resumed is not None
    assert resumed.state == "done"
    paths = [e["path"] for e in tenant.emulator.control.request_log(org)]
    assert any(p.endswith("/limits/") for p in paths)  # the org was probed before resuming
    assert tenant.used_credits() == tenant.counted_requests()


def test_jobs_of_a_paused_tenant_park_without_calling_salesforce(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=10)
    PauseStore(tenant.client).pause(tenant.name, "auth_failed", "credentials revoked")
    job = tenant.pull()
    assert job.state == "parked"
    assert tenant.counted_requests() == 0
    assert CreditBucket(tenant.client).status(tenant.name).used == 0


def test_garbage_limit_parks_with_config_invalid_until_fixed(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=10)
    tenant.client.hset(keys.config(tenant.name), "limit", "lots")  # written by hand, not a limit
    job = tenant.pull()
    assert job.state == "parked"
    assert tenant.counted_requests() == 0
    kinds = [n.kind for n in recent(tenant.client, tenant.name, limit=50)]
    assert kinds.count("config_invalid") == 1
    assert "quota_exhausted" not in kinds
    tenant.bucket.set_limit(tenant.name, 100_000, actor="admin")
    done = wait_for(tenant.client, tenant.name, job.job_id, timeout=120, until=frozenset({"done", "failed"}))
    assert done is not None
    assert (done.state, done.records) == ("done", 10)
