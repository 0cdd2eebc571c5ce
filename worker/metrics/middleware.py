"""Dramatiq's own Prometheus middleware, wired into the worker pool's multiprocess directory.

Upstream, ``dramatiq.middleware.prometheus.Prometheus`` keeps its files in ``$dramatiq_prom_db`` (default
``/tmp/dramatiq-prometheus``, read when its module is imported), overwrites ``PROMETHEUS_MULTIPROC_DIR``
with that at process boot, and forks a server on ``0.0.0.0:9191`` that only it knows about. Here it writes
to the same directory as our instruments, and serves nothing itself: ``crmsync metrics`` reports its
families (renamed ``crmsync_dramatiq_*``) in the one scrape, on the address ops chose.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

import structlog
from prometheus_client import values

from worker.metrics.multiprocess import DRAMATIQ_ENV, ENV
from worker.settings import multiproc_dir

__all__ = ["install_worker_metrics", "prometheus_middleware"]

log = structlog.get_logger("crmsync.metrics")


def prometheus_middleware(environ: MutableMapping[str, str] | None = None) -> Any | None:
    """Dramatiq's Prometheus middleware without its own HTTP server, writing to ``PROMETHEUS_MULTIPROC_DIR``.

    ``None`` when ``PROMETHEUS_MULTIPROC_DIR`` is unset (worker metrics off): the upstream middleware would
    then write to ``/tmp`` and switch this process's metrics to a directory no one scrapes.
    """
    env = os.environ if environ is None else environ
    directory = multiproc_dir(env)
    if directory is None:
        return None
    env[ENV] = str(directory)
    env[DRAMATIQ_ENV] = str(directory)  # before the import below: the module reads it (and mkdirs it) then
    # Imported here, not at the top: at import the module creates its directory (/tmp/dramatiq-prometheus when
    # the variable is unset), which must be ours, and only in a process with worker metrics on.
    from dramatiq.middleware import prometheus  # noqa: PLC0415

    # The middleware reads the module global at boot and shutdown; pin it in case the module was imported
    # earlier with another directory.
    prometheus.DB_PATH = str(directory)

    class CrmsyncPrometheus(prometheus.Prometheus):
        """Upstream's middleware, minus the exposition server it would fork on 0.0.0.0:9191."""

        @property
        def forks(self) -> list[Any]:
            return []

    return CrmsyncPrometheus()


def install_worker_metrics(broker: Any, environ: MutableMapping[str, str] | None = None) -> bool:
    """In a worker process, before process boot: add Dramatiq's Prometheus middleware to ``broker``.

    Returns whether worker metrics are on. Warns when prometheus-client was imported before
    ``PROMETHEUS_MULTIPROC_DIR`` was set, as this process's counts would then never reach a scrape.
    """
    middleware = prometheus_middleware(environ)
    if middleware is None:
        log.info("worker_metrics_off", reason=f"{ENV} is unset")
        return False
    if values.ValueClass is values.MutexValue:
        log.warning("worker_metrics_not_multiprocess",
                    reason=f"prometheus_client was imported before {ENV} was set; start workers with "
                           "`crmsync worker` (or set the variable before starting dramatiq)")
    broker.add_middleware(middleware)
    return True
