"""The worker application: ``dramatiq worker.app`` (what ``crmsync worker`` runs).

Importing it sets up a worker process: logging, the broker (built from the environment and installed as
Dramatiq's, which its CLI then runs), the job and notification-delivery actors declared on it, and the
middleware: the resumer, the job counts (``crmsync_jobs_total``) and, when ``PROMETHEUS_MULTIPROC_DIR`` is set,
Dramatiq's own Prometheus middleware.
"""

from __future__ import annotations

from worker.broker import build_broker, install
from worker.jobs.actors import declare_actors
from worker.jobs.resume import ResumerMiddleware
from worker.logs import configure_logging
from worker.metrics.jobs import JobMetrics
from worker.metrics.middleware import install_worker_metrics
from worker.notifications.delivery import declare_delivery_actor

__all__ = ["broker"]

configure_logging()
broker = install(build_broker())
declare_actors(broker)
declare_delivery_actor(broker)  # this app's processes consume the crmsync-notify queue too
broker.add_middleware(ResumerMiddleware())
broker.add_middleware(JobMetrics())
install_worker_metrics(broker)  # before process boot; a no-op when PROMETHEUS_MULTIPROC_DIR is unset
