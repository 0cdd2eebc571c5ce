"""Worker metrics reach one scrape from every worker process, and tenant gauges match Redis."""

from __future__ import annotations

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.e2e.conftest import Tenant, Workers
from worker.metrics.server import build_registry, scrape


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, lbls), v in values.items()
               if n == name and all(dict(lbls).get(k) == want for k, want in labels.items()))


def test_a_scrape_shows_worker_counters_and_tenant_gauges(
    workers: Workers, make_tenant, worker_env: dict[str, str], redis_url: str
) -> None:
    warm_up: Tenant = make_tenant(records=1)
    assert warm_up.pull().state == "done"  # the worker pool is up and has made its metrics directory
    registry = build_registry(redis.Redis.from_url(redis_url), worker_env["PROMETHEUS_MULTIPROC_DIR"])
    before = samples(scrape(registry))
    tenant: Tenant = make_tenant(records=2_500)
    job = tenant.pull()
    assert (job.state, job.credits) == ("done", 2)
    after = samples(scrape(registry))

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("crmsync_credits_charged_total") >= 2
    assert grew("crmsync_api_requests_total", object="Lead", method="GET", outcome="200") >= 2
    assert grew("crmsync_jobs_total", kind="pull", outcome="done") >= 1
    assert grew("crmsync_api_request_duration_seconds_count", method="GET") >= 2
    assert total(after, "crmsync_dramatiq_messages_total", actor_name="crmsync_pull") >= 1
    assert total(after, "crmsync_quota_used", tenant=tenant.name) == 2
    assert total(after, "crmsync_quota_limit", tenant=tenant.name) == 100_000
    assert total(after, "crmsync_quota_remaining", tenant=tenant.name) == 99_998
    assert total(after, "crmsync_tenant_paused", tenant=tenant.name) == 0
    usage = tenant.emulator.control.usage(tenant.org.name)

    def org_gauges() -> tuple[float, float]:
        now = samples(scrape(registry))
        return total(now, "crmsync_org_api_usage", tenant=tenant.name), total(now, "crmsync_org_api_max",
                                                                              tenant=tenant.name)

    # A worker writes the org usage it last saw within a second (a background writer), so the gauge catches up.
    wait_until(lambda: org_gauges() == (usage["used"], usage["max"]), 30, "the org usage gauges", org_gauges)
