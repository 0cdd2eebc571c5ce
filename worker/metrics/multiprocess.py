"""prometheus-client multiprocess mode for the worker pool, and the collector that adds it up at scrape.

Every worker process writes its counters to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` (one file
per process and metric type, named by pid); ``crmsync metrics`` sums them. prometheus-client picks its
mode when it is first imported, so the variable must be in the environment before any worker process
imports it: ``crmsync worker`` calls ``prepare_multiproc_dir`` and then execs ``dramatiq``, whose processes
inherit the environment.

The directory is emptied at the start of the pool, in the parent, before any worker process exists:
files left by an earlier pool would otherwise be added to the new one's counts forever (and their pids
may be reused). Only ``*.db`` files are removed, never anything else, so a mistyped path loses nothing
else. One pool per directory: two pools sharing one would wipe each other's counts at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _float_to_go

from worker.settings import MULTIPROC_ENV, multiproc_dir

__all__ = [
    "DRAMATIQ_ENV",
    "ENV",
    "WorkerMetricsCollector",
    "mark_process_dead",
    "prepare_multiproc_dir",
]

log = structlog.get_logger("crmsync.metrics")

ENV = MULTIPROC_ENV
#: Dramatiq's Prometheus middleware reads its directory from this variable when its module is imported.
DRAMATIQ_ENV = "dramatiq_prom_db"

# prometheus-client leaves these untyped.
multiprocess: Any = _multiprocess
floatToGoString: Any = _float_to_go

_DRAMATIQ_PREFIX = "dramatiq_"
_MILLISECONDS = "_milliseconds"


def prepare_multiproc_dir(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: MutableMapping[str, str] | None = None,
    clean: bool = True,
) -> Path | None:
    """Create and empty the worker pool's multiprocess directory, and point the environment at it.

    Call it once in the pool's parent, before any worker process starts and before this process imports
    anything that creates metrics (``crmsync worker`` does, right before it execs ``dramatiq``). ``path``
    defaults to ``PROMETHEUS_MULTIPROC_DIR``; with neither, worker metrics stay off and ``None`` is
    returned. Sets ``PROMETHEUS_MULTIPROC_DIR`` and ``dramatiq_prom_db`` so that our instruments and
    Dramatiq's middleware write to the same directory.
    """
    env = os.environ if environ is None else environ
    directory = Path(path) if path is not None else multiproc_dir(env)
    if directory is None:
        return None
    directory = directory.absolute()  # worker processes may change directory; the files must not move
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if clean:
        removed = 0
        for stale in directory.glob("*.db"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed += 1
        log.info("metrics_dir_emptied", path=str(directory), removed=removed)
    env[ENV] = str(directory)
    env[DRAMATIQ_ENV] = str(directory)
    return directory


def mark_process_dead(pid: int, environ: MutableMapping[str, str] | None = None) -> None:
    """Drop a dead worker process's live gauges (``livesum`` and the like) from the directory.

    Counters and histograms keep their files on purpose: what a dead process counted still happened.
    Dramatiq's middleware calls this for each worker process at its shutdown; call it for a process that
    died otherwise if the pool keeps running.
    """
    directory = multiproc_dir(environ)
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))


def _dramatiq_family(metric: Metric) -> Metric:
    """Dramatiq's family under our conventions: ``crmsync_`` prefix, seconds, no per-process ``pid``."""
    name = "crmsync_" + metric.name
    scale = 1.0
    if name.endswith(_MILLISECONDS):  # dramatiq_message_duration_milliseconds: base unit is seconds
        name, scale = name[: -len(_MILLISECONDS)] + "_seconds", 1000.0
    renamed = Metric(name, metric.documentation, metric.type)
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in metric.samples:
        sample_name = "crmsync_" + sample.name
        labels = dict(sample.labels)
        value = sample.value
        if scale != 1.0:
            sample_name = sample_name.replace(_MILLISECONDS, "_seconds")
            if "le" in labels and labels["le"] != "+Inf":
                labels["le"] = floatToGoString(float(labels["le"]) / scale)
            if sample_name.endswith("_sum"):
                value /= scale
        # Gauges in Dramatiq's default "all" mode carry one series per process; their sum is the pool's value.
        labels.pop("pid", None)
        key = (sample_name, tuple(sorted(labels.items())))
        summed[key] = summed.get(key, 0.0) + value
    renamed.samples = [Sample(n, dict(labels), v) for (n, labels), v in summed.items()]
    return renamed


class WorkerMetricsCollector:
    """The worker pool's metrics, summed over every process's files in the multiprocess directory.

    Dramatiq's own families (``dramatiq_*``) are reported as ``crmsync_dramatiq_*``, its millisecond
    histogram in seconds, so that every family follows one naming convention. A file that cannot be read
    drops the worker families of that scrape (and is logged), never the per-tenant gauges.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._inner: Any = multiprocess.MultiProcessCollector(None, path=str(self.path))

    def collect(self) -> Iterable[Metric]:
        """Every worker family, summed over processes."""
        try:
            families = list(self._inner.collect())
        except Exception as exc:  # a truncated or foreign .db file must not fail the whole scrape
            log.warning("worker_metrics_unreadable", path=str(self.path), error=f"{type(exc).__name__}: {exc}")
            return []
        return list(self._convert(families))

    @staticmethod
    def _convert(families: Iterable[Metric]) -> Iterator[Metric]:
        for metric in families:
            yield _dramatiq_family(metric) if metric.name.startswith(_DRAMATIQ_PREFIX) else metric
