"""A tenant's reserve end to end: when only the reserve is left, real workers park its normal jobs (reason
quota_exhausted, saying the reserve is kept for essential jobs) while an essential job of the same tenant runs to
the end on the reserve; raising the limit resumes the normal ones."""

from __future__ import annotations

from tests.e2e.conftest import Tenant, Workers
from tests.e2e.test_pause_resume import delivered_ids, wait_all
from worker.cli.status import tenant_rows
from worker.enqueue import enqueue_pull, enqueue_push
from worker.jobs.parking import PauseStore
from worker.notifications import recent

SETTLED = frozenset({"done", "failed", "stopped"})


def test_normal_jobs_park_on_the_reserve_while_an_essential_job_completes(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=5_000)
    tenant.bucket.set_limit(tenant.name, 100_000, actor="admin", reserve=1_000)
    assert tenant.bucket.take(tenant.name, 99_000 - 2).granted  # two credits left above the reserve
    rows = [{"External_Id__c": f"r-{i}", "Name": f"Campaign {i}"} for i in range(300)]
    normal = [enqueue_pull(tenant.client, tenant.name, "Lead"), enqueue_pull(tenant.client, tenant.name, "Contact"),
              enqueue_push(tenant.client, tenant.name, "Campaign", rows, "External_Id__c")]
    assert [job.state for job in wait_all(tenant, normal, frozenset({"parked"}))] == ["parked"] * 3
    pauses = PauseStore(tenant.client)
    state = pauses.get(tenant.name)
    assert state is not None
    assert (state.reason, state.scope) == ("quota_exhausted", "normal")
    assert tenant.counted_requests() == 2  # the normal jobs never touched the reserve

    essential = enqueue_pull(tenant.client, tenant.name, "Account", priority="essential")
    job = tenant.wait_done(essential)
    assert (job.state, job.records, job.credits, job.priority) == ("done", 5_000, 3, "essential")
    assert len(set(delivered_ids(workers, tenant, "Account"))) == 5_000
    # The essential job ran on the reserve; the normal ones still wait, and the pause still holds only them.
    [row] = [r for r in tenant_rows(tenant.bucket) if r["tenant"] == tenant.name]
    assert (row["paused"], row["pause_scope"], row["parked_jobs"]) == (True, "normal", 3)
    status = tenant.bucket.status(tenant.name)
    assert (status.reserve, status.remaining, status.available) == (1_000, 1_000 - 3, 0)

    [notice] = [n for n in recent(tenant.client, tenant.name, limit=50) if n.kind == "quota_exhausted"]
    assert "the reserve kept for essential jobs, which go on" in notice.message
    assert (notice.details["reserve"], notice.details["paused"]) == (1_000, "normal")

    tenant.bucket.set_limit(tenant.name, 200_000, actor="admin")
    done = wait_all(tenant, normal, SETTLED)
    assert [job.state for job in done] == ["done"] * 3
    assert done[2].records == 300
    assert pauses.get(tenant.name) is None
    assert pauses.parked_count(tenant.name) == 0
    for sobject in ("Lead", "Contact"):
        ids = delivered_ids(workers, tenant, sobject)
        assert len(ids) == len(set(ids)) == 5_000, sobject
    # Every request paid for, and nothing more: 3 + 3 + 3 pages and 2 collections.
    assert tenant.used_credits() - (99_000 - 2) == tenant.counted_requests() == 11
