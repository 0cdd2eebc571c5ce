"""Every metric the alert rules and the dashboard use exists on a live scrape of real processes.

A real Redis with the repository's ACL users, the Salesforce emulator, `crmsync worker` as the worker user
and `crmsync metrics` as the read-only metrics user. Tenants pull records, one large enough to go by Bulk API
2.0 (its budgets read from /limits), one runs dry and parks (a quota_exhausted notification), one is paused
for auth_failed, a malformed message fails into the dead-letter
queue, an admin raises the limit and the parked job finishes. Then one scrape must carry every family (and
every label) that deploy/prometheus/alerts.yml and deploy/grafana/dashboards/*.json name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from prometheus_client.parser import text_string_to_metric_families

from emulator import EmulatorServer
from quota import CreditBucket
from tests.deploy.conftest import AclRedis
from tests.deploy.promql import every_expr, matched_labels, metric_names
from worker.broker import NAMESPACE
from worker.devstack.processes import stop_group
from worker.enqueue import wait_for
from worker.jobs.parking import PauseStore
from worker.jobs.state import TERMINAL
from worker.salesforce.connections import ConnectionStore

pytestmark = pytest.mark.slow

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
TIMEOUT_S = 120
# Past the first REST page, these cost fewer credits by a Bulk query job than by REST pages: `auto` takes Bulk.
BULK_RECORDS = 12_000


@dataclass
class Scrape:
    text: str
    labels: dict[str, set[str]]  # sample name -> label names seen
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float | None:
        for (sample, lbls), v in self.values.items():
            if sample == name and all(dict(lbls).get(k) == want for k, want in labels.items()):
                return v
        return None


def _parse(text: str) -> Scrape:
    labels: dict[str, set[str]] = {}
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(text, labels, values)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT_S + 30,
                          check=False)


@pytest.fixture(scope="module")
def scrape(acl_redis: AclRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    base = tmp_path_factory.mktemp("live")
    breakglass = acl_redis.client("breakglass")  # only it may FLUSHDB
    breakglass.flushdb()
    admin = acl_redis.client("admin")
    env = {**os.environ, "CRMSYNC_LOG_FORMAT": "json", "CRMSYNC_DATA_DIR": str(base / "data"),
           "CRMSYNC_RETRY_INITIAL_WAIT": "0.01", "CRMSYNC_RETRY_MAX_WAIT": "0.05", "CRMSYNC_ORG_PROBE_SECONDS": "1",
           "CRMSYNC_BULK": "auto", "CRMSYNC_BULK_POLL_SECONDS": "0.05"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker_env = {**env, "REDIS_URL": acl_redis.url("worker"), "PROMETHEUS_MULTIPROC_DIR": str(base / "metrics")}
    admin_env = {**env, "REDIS_URL": acl_redis.url("admin")}
    processes: list[subprocess.Popen[bytes]] = []
    with EmulatorServer(orgs=[]) as emulator:
        try:
            bucket = CreditBucket(admin)
            for tenant, records in (("live-ok", 30), ("live-dry", 2_500), ("live-auth", 1),
                                    ("live-bulk", BULK_RECORDS)):
                org = emulator.control.add_org(f"org-{tenant}", environment="production", records=records)
                secret = base / f"{tenant}.secret"
                secret.write_text(org.client_secret)
                ConnectionStore(admin).connect(tenant, environment="production", login_url=emulator.base_url,
                                               client_id=org.client_id, client_secret_file=str(secret),
                                               ca_bundle=emulator.ca_bundle)
                bucket.set_limit(tenant, 100_000, actor="deploy-test")
            bucket.take("live-dry", 99_999)  # one page's credit left: the second page parks the pull

            with (base / "worker.log").open("wb") as log:
                processes.append(subprocess.Popen([CRMSYNC, "worker", "--processes", "1", "--threads", "2"],
                                                  env=worker_env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            done = _run(worker_env, "sync", "live-ok", "Lead", "--wait", "--json", "--timeout", str(TIMEOUT_S))
            assert done.returncode == 0, (done.stdout, done.stderr, (base / "worker.log").read_text()[-3000:])
            emulator.control.set_bulk_rate("org-live-bulk", 0)  # its query job completes at once
            bulk = _run(worker_env, "sync", "live-bulk", "Lead", "--wait", "--json", "--timeout", str(TIMEOUT_S))
            assert bulk.returncode == 0, (bulk.stdout, bulk.stderr, (base / "worker.log").read_text()[-3000:])
            parked = _run(worker_env, "sync", "live-dry", "Lead", "--wait", "--json", "--timeout", str(TIMEOUT_S))
            assert parked.returncode == 3, (parked.stdout, parked.stderr)
            parked_job = json.loads(parked.stdout)["job_id"]
            worker = acl_redis.client("worker")
            PauseStore(worker).pause("live-auth", "auth_failed", "deploy test")

            # A malformed message: Dramatiq counts the error and dead-letters it.
            broker = RedisBroker(url=acl_redis.url("worker"), namespace=NAMESPACE)
            broker.declare_queue("crmsync")
            broker.enqueue(Message(queue_name="crmsync", actor_name="crmsync_pull", args=(),
                                   kwargs={"malformed": True}, options={}))
            broker.close()
            deadline = time.monotonic() + TIMEOUT_S
            while not admin.zcard(f"{NAMESPACE}:crmsync.XQ") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert admin.zcard(f"{NAMESPACE}:crmsync.XQ") == 1

            # An admin raises the limit: the worker's resumer re-queues the parked pull, which finishes.
            raised = _run(admin_env, "quota", "set", "live-dry", "200000")
            assert raised.returncode == 0, raised.stderr
            record = wait_for(worker, "live-dry", parked_job, timeout=TIMEOUT_S, until=TERMINAL)
            assert record is not None
            assert record.state == "done"
            worker.close()

            metrics = subprocess.Popen(
                [CRMSYNC, "metrics", "--host", "127.0.0.1", "--port", "0", "--multiproc-dir", str(base / "metrics")],
                env={**env, "REDIS_URL": acl_redis.url("metrics")}, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True)
            processes.append(metrics)
            assert metrics.stdout is not None
            banner = metrics.stdout.readline().decode()
            assert banner.startswith("serving "), banner
            url = banner.split()[1]
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (our own loopback server)
                yield _parse(response.read().decode())
        finally:
            for process in reversed(processes):
                stop_group(process)
            breakglass.flushdb()
            breakglass.close()
            admin.close()


EXPRS = list(every_expr())


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(EXPRS)])
def test_every_metric_used_is_scraped(scrape: Scrape, where: str, expr: str) -> None:
    names = metric_names(expr)
    missing = sorted(name for name in names if name not in scrape.labels)
    assert not missing, f"{where} uses {missing}, not on a live scrape: {expr}"
    for metric, label in matched_labels(expr):
        assert label in scrape.labels.get(metric, set()) | {"le", "job", "instance"}, \
            f"{where}: {metric} has no label {label!r}: {expr}"


def test_rules_and_dashboard_use_the_documented_metrics() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
    used = set().union(*(metric_names(expr) for _, expr in EXPRS))
    for name in used:
        family = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        assert f"`{family}`" in readme or family.startswith("crmsync_dramatiq_message"), \
            f"{name} is not documented in docs/operating.md's Metrics section"


def test_the_live_scrape_tells_the_story(scrape: Scrape) -> None:
    assert scrape.value("crmsync_tenant_scrape_success") == 1
    assert scrape.value("crmsync_tenant_scrape_errors") == 0
    assert scrape.value("crmsync_tenant_paused", tenant="live-auth", reason="auth_failed") == 1
    assert scrape.value("crmsync_tenant_paused", tenant="live-ok", reason="") == 0
    assert scrape.value("crmsync_quota_limit", tenant="live-dry") == 200_000
    assert (scrape.value("crmsync_jobs_total", kind="pull", outcome="parked") or 0) >= 1
    assert (scrape.value("crmsync_jobs_total", kind="pull", outcome="done") or 0) >= 2
    assert (scrape.value("crmsync_notifications_total", kind="quota_exhausted", channel="log",
                         outcome="delivered") or 0) >= 1
    assert scrape.value("crmsync_dramatiq_messages_total", actor_name="crmsync_pull") is not None
    assert (scrape.value("crmsync_api_requests_total", api="bulk", method="POST", outcome="200") or 0) >= 1
    assert (scrape.value("crmsync_api_requests_total", api="rest", object="Lead", outcome="200") or 0) >= 3
    assert scrape.value("crmsync_bulk_budget_max", tenant="live-bulk", budget="query_jobs") == 10_000
    assert scrape.value("crmsync_bulk_budget_remaining", tenant="live-bulk", budget="query_jobs") == 10_000
    assert scrape.value("crmsync_bulk_budget_read_timestamp_seconds", tenant="live-bulk") is not None
    assert scrape.value("crmsync_bulk_budget_remaining", tenant="live-ok", budget="query_jobs") is None

