"""Helpers for the metrics tests: a live /metrics server, scraped over HTTP, and worker-like processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from worker.metrics.server import Exposition, MetricsServer, serve

ROOT = Path(__file__).resolve().parents[2]

Serve = Callable[[Exposition], MetricsServer]


def http_scrape(server: MetricsServer) -> str:
    """GET /metrics over HTTP, as Prometheus does."""
    response = requests.get(server.url, timeout=10)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def families(text: str) -> dict[str, Metric]:
    """The parsed families of a scrape, by name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(text: str, sample: str, **labels: str) -> float | None:
    """The value of one sample of a scrape, or ``None`` if the scrape has no such sample."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    return None


def samples(text: str, sample: str) -> list[tuple[dict[str, str], float]]:
    """Every sample named ``sample``: its labels and value."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == sample]


@pytest.fixture
def serve_registry() -> Iterator[Serve]:
    """Serve a registry on a free loopback port; every server is closed at the end of the test."""
    servers: list[MetricsServer] = []

    def start(registry: Exposition) -> MetricsServer:
        server = serve(registry, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def prom_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prom"
    directory.mkdir()
    return directory


def run_proc(prom_dir: Path, kind: str, count: int, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``tests.metrics.procs`` in a fresh interpreter with ``PROMETHEUS_MULTIPROC_DIR=prom_dir``."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir), **extra_env}
    env.pop("prometheus_multiproc_dir", None)
    result = subprocess.run([sys.executable, "-m", "tests.metrics.procs", kind, str(count)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result
