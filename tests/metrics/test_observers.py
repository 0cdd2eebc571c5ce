"""The metrics observer: bounded labels, and real metered requests counted in the worker instruments."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
import requests
from prometheus_client import REGISTRY

from quota import CreditBucket
from tests.conftest import FakeClock
from tests.metrics.procs import request_event
from worker.metrics.observers import MetricsObserver, api_label, method_label, object_from_url, outcome_label
from worker.salesforce.session import MeteredSession, OrgUsage

BASE = "https://x.my.salesforce.com/services/data/v59.0"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(("method", "label"), [
    ("get", "GET"), ("POST", "POST"), ("Patch", "PATCH"), ("DELETE", "DELETE"), ("BREW", "OTHER"), ("", "OTHER"),
])
def test_method_label_is_bounded(method: str, label: str) -> None:
    assert method_label(method) == label


@pytest.mark.parametrize(("outcome", "label"), [
    ("200", "200"), ("403", "403"), ("429", "429"), ("503", "503"), ("299", "2xx"), ("418", "4xx"),
    ("599", "5xx"), ("600", "other"), ("99", "other"), ("²00", "other"), ("connection_error", "connection_error"),
    ("not_sent", "not_sent"), ("timeout", "other"), ("", "other"),
])
def test_outcome_label_is_bounded(outcome: str, label: str) -> None:
    assert outcome_label(outcome) == label


@pytest.mark.parametrize(("url", "sobject"), [
    (f"{BASE}/sobjects/Lead/00Q000000000001", "Lead"),
    (f"{BASE}/sobjects/Invoice__c", "Invoice__c"),
    (f"{BASE}/composite/sobjects/Contact/External_Id__c", "Contact"),
    (f"{BASE}/query/?q=SELECT+Id+FROM+Lead+WHERE+SystemModstamp+%3E%3D+2024-01-01T00:00:00.000Z", "Lead"),
    (f"{BASE}/query/?q=SELECT+Id%2C+(SELECT+Id+FROM+Contacts)+FROM+Account", "Account"),
    (f"{BASE}/queryAll?q=select+id+from+opportunity", "opportunity"),
    (f"{BASE}/query/01gXX-2000", None),
    (f"{BASE}/limits/", None),
    (f"{BASE}/sobjects", None),
    (f"{BASE}/composite/sobjects", None),
    ("https://login.salesforce.com/services/oauth2/token", None),
])
def test_object_from_url(url: str, sobject: str | None) -> None:
    assert object_from_url(url) == sobject


@pytest.mark.parametrize(("url", "api"), [
    (f"{BASE}/jobs/query", "bulk"),
    (f"{BASE}/jobs/query/750XX/results?locator=abc&maxRecords=100000", "bulk"),
    (f"{BASE}/jobs/ingest/750XX/batches", "bulk"),
    ("https://x.my.salesforce.com/services/data/v62.0/jobs/ingest/750XX/failedResults/", "bulk"),
    (f"{BASE}/query/?q=SELECT+Id+FROM+Lead", "rest"),
    (f"{BASE}/sobjects/jobs/x", "rest"),
    (f"{BASE}/query/?q=SELECT+Id+FROM+Lead&next=/jobs/", "rest"),
    (f"{BASE}/limits/", "rest"),
    ("https://x.my.salesforce.com/jobs/query", "rest"),
    ("https://login.salesforce.com/services/oauth2/token", "rest"),
    ("not a url at all", "rest"),
])
def test_api_label_is_bulk_only_for_bulk_api_paths(url: str, api: str) -> None:
    assert api_label(url) == api


def test_object_labels_are_an_allowlist() -> None:
    observer = MetricsObserver.from_env({"CRMSYNC_METRICS_OBJECTS": "Invoice__c, not valid!,"})
    assert observer.object_label("lead") == "Lead"
    assert observer.object_label("Invoice__c") == "Invoice__c"
    assert observer.object_label("Shipment__c") == "other"
    assert observer.object_label("not valid!") == "other"
    assert observer.object_label("limits") == "none"
    assert observer.object_label(None) == "none"


def test_event_object_wins_over_the_url() -> None:
    observer = MetricsObserver()
    contact = {"api": "rest", "object": "Contact", "method": "GET", "outcome": "200"}
    before = _sample("crmsync_api_requests_total", **contact)
    event = request_event(tenant="acme", sobject="Contact", method="GET", url=f"{BASE}/query/01gXX-2000",
                          outcome="200", seconds=0.1, charged=True)
    observer.after_request(event)
    expected = 1.0 if hasattr(event, "sobject") else 0.0  # older RequestEvent: the URL names no object
    assert _sample("crmsync_api_requests_total", **contact) - before == expected


def test_observer_never_raises() -> None:
    class Broken:
        tenant, method, url, outcome, charged = "acme", "GET", BASE, "200", True
        seconds = "not a number"

    MetricsObserver().after_request(Broken())  # type: ignore[arg-type]


class _Org(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"totalSize": 0, "done": true, "records": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Sforce-Limit-Info", "api-usage=4321/15000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # Bulk job creation: any answer will do, only the request's labels matter

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def org() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Org)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/data/v59.0"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_metered_requests_are_counted(redis_client: redis.Redis, clock: FakeClock, org: str) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test")
    session = MeteredSession("acme", bucket, observers=(MetricsObserver(),))
    lead = {"api": "rest", "object": "Lead", "method": "GET", "outcome": "200"}
    refused = {"api": "rest", "object": "Lead", "method": "GET", "outcome": "not_sent"}
    before = {
        "ok": _sample("crmsync_api_requests_total", **lead),
        "refused": _sample("crmsync_api_requests_total", **refused),
        "charged": _sample("crmsync_credits_charged_total"),
        "refunded": _sample("crmsync_credits_refunded_total"),
        "durations": _sample("crmsync_api_request_duration_seconds_count", method="GET"),
    }

    for _ in range(3):
        session.get(f"{org}/query/", params={"q": "SELECT Id FROM Lead"}, timeout=5).raise_for_status()
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{_closed_port()}/services/data/v59.0/sobjects/Lead/x", timeout=5)

    assert _sample("crmsync_api_requests_total", **lead) - before["ok"] == 3
    assert _sample("crmsync_api_requests_total", **refused) - before["refused"] == 1
    assert _sample("crmsync_credits_charged_total") - before["charged"] == session.charged == 4
    assert _sample("crmsync_credits_refunded_total") - before["refunded"] == session.refunded == 1
    assert _sample("crmsync_api_request_duration_seconds_count", method="GET") - before["durations"] == 3
    assert bucket.status("acme").used == 3  # the bucket agrees: charged minus refunded
    assert OrgUsage.read(redis_client, "acme") is not None


def test_real_bulk_requests_are_counted_apart_from_rest(redis_client: redis.Redis, clock: FakeClock,
                                                        org: str) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test")
    session = MeteredSession("acme", bucket, observers=(MetricsObserver(),))
    series = {
        "create": {"api": "bulk", "object": "none", "method": "POST", "outcome": "200"},
        "reads": {"api": "bulk", "object": "none", "method": "GET", "outcome": "200"},
        "rest": {"api": "rest", "object": "Lead", "method": "GET", "outcome": "200"},
    }
    before = {name: _sample("crmsync_api_requests_total", **labels) for name, labels in series.items()}

    session.post(f"{org}/jobs/query", json={"operation": "query", "query": "SELECT Id FROM Lead"}, timeout=5)
    for _ in range(2):
        session.get(f"{org}/jobs/query/750XX", timeout=5).raise_for_status()
    session.get(f"{org}/jobs/query/750XX/results", params={"maxRecords": 100_000}, timeout=5).raise_for_status()
    session.get(f"{org}/query/", params={"q": "SELECT Id FROM Lead"}, timeout=5).raise_for_status()

    grew = {name: _sample("crmsync_api_requests_total", **labels) - before[name] for name, labels in series.items()}
    assert grew == {"create": 1, "reads": 3, "rest": 1}  # two polls and a results page
    assert bucket.status("acme").used == session.charged == 5  # Bulk requests are metered like REST ones
