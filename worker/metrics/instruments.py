"""Worker-side Prometheus instruments. In worker processes they run in prometheus-client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``), so every process's counts add up in one scrape. There, creating them opens
files in that directory, so it must exist before this module is imported: ``crmsync worker`` prepares it
(``worker.metrics.multiprocess.prepare_multiproc_dir``) before it starts the pool.

Names follow Prometheus conventions: the ``crmsync_`` prefix, base units, ``_total`` for counters. None of
these carries a ``tenant`` label (tenants are unbounded); per-tenant values are the quota gauges.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "API_REQUESTS",
    "API_REQUEST_DURATION",
    "CREDITS_CHARGED",
    "CREDITS_REFUNDED",
    "DELIVERIES_GIVEN_UP",
    "JOBS",
    "NOTIFICATIONS",
]

API_REQUESTS = Counter(
    "crmsync_api_requests_total",
    "Salesforce API requests sent (or refused before sending), by API (rest or bulk), object, method and outcome",
    ["api", "object", "method", "outcome"],
)
API_REQUEST_DURATION = Histogram(
    "crmsync_api_request_duration_seconds",
    "Duration of metered Salesforce API requests",
    ["method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)
CREDITS_CHARGED = Counter("crmsync_credits_charged_total", "API credits taken from tenants' buckets")
CREDITS_REFUNDED = Counter("crmsync_credits_refunded_total", "API credits returned for requests never sent")
JOBS = Counter("crmsync_jobs_total", "Sync jobs that ended a run, by kind and outcome", ["kind", "outcome"])
NOTIFICATIONS = Counter(
    "crmsync_notifications_total",
    "Error notifications, by kind, channel and delivery outcome",
    ["kind", "channel", "outcome"],
)
DELIVERIES_GIVEN_UP = Counter(
    "crmsync_notification_deliveries_given_up_total",
    "Webhook and email deliveries given up, by channel and reason (expired, refused, uncertain)",
    ["channel", "reason"],
)
