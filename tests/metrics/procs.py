"""Worker-like processes for the multiprocess tests: ``python -m tests.metrics.procs KIND COUNT``.

Each runs with ``PROMETHEUS_MULTIPROC_DIR`` already in its environment (as a worker's is), so every metric
it touches lands in that directory's files under its own pid.

- ``requests COUNT``: the metrics observer sees COUNT requests to Lead (GET 200) and one refunded one.
- ``all COUNT``: as ``requests``, and every other worker instrument gets a sample too.
- ``dramatiq COUNT``: a real Dramatiq worker, with the wired Prometheus middleware, processes COUNT messages.
"""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from worker.metrics.instruments import JOBS, NOTIFICATIONS
from worker.metrics.middleware import install_worker_metrics
from worker.metrics.observers import MetricsObserver
from worker.salesforce.session import RequestEvent


def request_event(**fields: Any) -> Any:
    """A ``RequestEvent``, with or without its ``sobject`` field (the field is new; either works)."""
    if "sobject" not in RequestEvent.__dataclass_fields__:
        fields.pop("sobject", None)
    else:
        fields.setdefault("sobject", "")
    return RequestEvent(**fields)


def observe_requests(count: int) -> None:
    observer = MetricsObserver()
    url = "https://x.my.salesforce.com/services/data/v59.0/sobjects/Lead/00Q000000000001"
    ok = request_event(tenant="acme", method="get", url=url, outcome="200", seconds=0.2, charged=True)
    for _ in range(count):
        observer.after_request(ok)
    observer.after_request(request_event(tenant="acme", method="GET", url=url, outcome="not_sent", seconds=0.0,
                                         charged=False))


def touch_every_instrument(count: int) -> None:
    """Every worker instrument gets a sample (labelled families only appear once used)."""
    observe_requests(count)
    JOBS.labels("pull", "done").inc(count)
    NOTIFICATIONS.labels("quota_exhausted", "webhook", "delivered").inc(count)


def run_dramatiq(count: int) -> None:
    broker = StubBroker()
    if not install_worker_metrics(broker):
        raise SystemExit("worker metrics did not install")
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="metrics_test", actor_name="metrics_ping")
    def ping() -> None:
        return None

    broker.emit_after("process_boot")  # as the dramatiq CLI does in each worker process
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    for _ in range(count):
        ping.send()
    broker.join(ping.queue_name)
    worker.join()
    worker.stop()  # after_worker_shutdown: the middleware marks this process dead


def main() -> None:
    kind, count = sys.argv[1], int(sys.argv[2])
    {"requests": observe_requests, "all": touch_every_instrument, "dramatiq": run_dramatiq}[kind](count)


if __name__ == "__main__":
    main()
