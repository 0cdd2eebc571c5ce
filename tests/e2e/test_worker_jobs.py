"""The worker end to end: real Redis broker, real worker processes, the emulator over real HTTPS.

Every test checks that the emulator's count of the tenant's requests equals the credits it was charged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from simple_salesforce.api import Salesforce

from tests.e2e.conftest import Tenant, Workers


def delivered(workers: Workers, tenant: Tenant, sobject: str = "Lead") -> list[dict[str, Any]]:
    path = workers.data_dir / tenant.name / f"{sobject}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def salesforce(tenant: Tenant) -> Salesforce:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, overrides the emulator's CA
    session.verify = tenant.emulator.ca_bundle
    token = tenant.emulator.control.issue_token(tenant.org.name)
    return Salesforce(instance_url=tenant.org.instance_url, session_id=token, session=session, version="59.0")


def test_pull_of_5000_leads_costs_3_credits_then_incremental_costs_1(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=5_000)
    job = tenant.pull()
    assert (job.state, job.records, job.credits) == ("done", 5_000, 3)
    assert tenant.used_credits() == 3
    assert tenant.counted_requests() == 3
    records = delivered(workers, tenant)
    assert len(records) == 5_000
    assert len({r["Id"] for r in records}) == 5_000
    assert all(r["SystemModstamp"] for r in records)

    sf = salesforce(tenant)
    changed = [r["Id"] for r in records[100:110]]
    for record_id in changed:
        sf.Lead.update(record_id, {"Title": "Changed"})
    tenant.emulator.control.clear_log(tenant.org.name)

    again = tenant.pull()
    assert (again.state, again.records, again.credits) == ("done", 10, 1)
    assert tenant.counted_requests() == 1
    assert tenant.used_credits() == 4
    assert sorted(r["Id"] for r in delivered(workers, tenant)[5_000:]) == sorted(changed)


def test_push_of_1000_records_costs_5_credits(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=0)
    rows = [{"External_Id__c": f"ext-{i}", "LastName": f"Doe {i}", "Company": "Acme"} for i in range(1_000)]
    job = tenant.push(rows)
    assert (job.state, job.records, job.failed_records, job.credits) == ("done", 1_000, 0, 5)
    assert tenant.counted_requests() == 5
    assert tenant.used_credits() == 5
    sf = salesforce(tenant)
    assert sf.query("SELECT Id FROM Lead WHERE External_Id__c = 'ext-999'")["totalSize"] == 1

    # The same push again updates the same records: upsert by external id creates no duplicates.
    assert tenant.push(rows).records == 1_000
    assert sf.query("SELECT Id FROM Lead LIMIT 2000")["totalSize"] == 1_000


def test_push_reports_per_record_errors(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=0)
    rows = [{"External_Id__c": "ok-1", "LastName": "Doe", "Company": "Acme"},
            {"External_Id__c": "bad-1", "Company": "Acme"}]  # LastName is required
    job = tenant.push(rows)
    assert (job.state, job.records, job.failed_records, job.credits) == ("done", 1, 1, 1)
    assert job.errors[0]["index"] == 1
    assert job.errors[0]["external_id"] == "bad-1"
    assert job.errors[0]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"


def test_quota_exhausted_stops_the_job_before_any_request(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=10)
    tenant.bucket.take(tenant.name, 100_000)
    job = tenant.pull()
    assert job.state == "parked"
    assert "no API credits left" in job.error
    assert (job.credits, job.records) == (0, 0)
    assert tenant.counted_requests() == 0


def test_pull_stopped_halfway_resumes_from_its_checkpoint(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=5_000)
    tenant.bucket.take(tenant.name, 100_000 - 2)  # credits for two of the three pages
    first = tenant.pull()
    assert (first.state, first.records, first.credits) == ("parked", 4_000, 2)
    tenant.bucket.set_limit(tenant.name, 100_001, actor="e2e")  # the parked job resumes by itself
    second = tenant.wait_done(first.job_id)
    assert (second.state, second.records, second.credits) == ("done", 5_000, 3)
    records = delivered(workers, tenant)
    assert len(records) == 5_000
    assert len({r["Id"] for r in records}) == 5_000
    assert tenant.counted_requests() == 3


def test_transient_503s_are_retried_and_each_attempt_charged(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=100)
    tenant.emulator.control.inject_fault(tenant.org.name, "http503", count=2)
    job = tenant.pull()
    assert (job.state, job.records, job.credits) == ("done", 100, 3)
    assert tenant.counted_requests() == 3
    assert tenant.used_credits() == 3


def test_no_secret_reaches_the_worker_log(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=10)
    assert tenant.pull().state == "done"
    log = workers.log_text()
    assert tenant.name in log  # the log did capture this tenant's job
    assert tenant.org.client_secret not in log
    assert tenant.org.refresh_token not in log
    for token in [tenant.org.access_token, tenant.emulator.control.orgs()[tenant.org.name].access_token]:
        assert token.split("!")[-1] not in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # production logs are JSON lines


def test_sink_path_is_per_tenant_and_object(workers: Workers, make_tenant) -> None:
    tenant = make_tenant(records=5)
    assert tenant.pull("Account").records == 5
    assert Path(workers.data_dir / tenant.name / "Account.jsonl").exists()
