"""The worker application: ``dramatiq worker.app`` (what ``crmsync worker`` runs)."""

from __future__ import annotations

from worker.logs import configure_logging

configure_logging()

from worker.broker import broker  # noqa: E402
from worker.jobs import actors  # noqa: E402  (logging first, so actor modules log through it)
from worker.jobs.resume import ResumerMiddleware  # noqa: E402
from worker.metrics.middleware import install_worker_metrics  # noqa: E402
from worker.notifications import delivery  # noqa: E402  (declares the crmsync-notify queue this app consumes)

broker.add_middleware(ResumerMiddleware())
install_worker_metrics(broker)  # before process boot; a no-op when PROMETHEUS_MULTIPROC_DIR is unset

__all__ = ["actors", "broker", "delivery"]
