"""Multiprocess mode: the directory's preparation, and real processes' counts summed in one scrape."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import redis
from dramatiq.brokers.stub import StubBroker

from tests.metrics.conftest import Serve, http_scrape, run_proc, samples, value
from worker.metrics.middleware import install_worker_metrics, prometheus_middleware
from worker.metrics.multiprocess import mark_process_dead, prepare_multiproc_dir
from worker.metrics.server import build_registry
from worker.settings import multiproc_dir


def test_prepare_creates_empties_and_points_both_variables(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "prom"
    env: dict[str, str] = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    assert prepare_multiproc_dir(environ=env) == directory
    assert directory.is_dir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "gauge_livesum_123.db").write_bytes(b"stale")
    (directory / "notes.txt").write_text("not ours")
    (directory / "sub.db").mkdir()

    assert prepare_multiproc_dir(environ=env) == directory

    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt", "sub.db"]  # only metric files go
    assert env == {"PROMETHEUS_MULTIPROC_DIR": str(directory), "dramatiq_prom_db": str(directory)}


def test_prepare_without_a_directory_leaves_metrics_off(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert prepare_multiproc_dir(environ=env) is None
    assert env == {}
    assert multiproc_dir(env) is None
    assert prometheus_middleware(env) is None
    assert install_worker_metrics(StubBroker(), env) is False


def test_prepare_with_a_relative_path_stores_an_absolute_one(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        env: dict[str, str] = {}
        directory = prepare_multiproc_dir("rel/prom", environ=env)
    finally:
        os.chdir(cwd)
    assert directory == tmp_path / "rel" / "prom"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "rel" / "prom")


def test_two_processes_add_up_in_one_scrape(prom_dir: Path, serve_registry: Serve) -> None:
    run_proc(prom_dir, "requests", 3)
    run_proc(prom_dir, "requests", 4)
    assert len(list(prom_dir.glob("counter_*.db"))) == 2  # one file per process

    text = http_scrape(serve_registry(build_registry(None, prom_dir)))

    assert value(text, "crmsync_api_requests_total", api="rest", object="Lead", method="GET", outcome="200") == 7
    assert value(text, "crmsync_api_requests_total", api="rest", object="Lead", method="GET", outcome="not_sent") == 2
    assert value(text, "crmsync_credits_charged_total") == 9
    assert value(text, "crmsync_credits_refunded_total") == 2
    assert value(text, "crmsync_api_request_duration_seconds_count", method="GET") == 7
    assert value(text, "crmsync_api_request_duration_seconds_bucket", method="GET", le="0.25") == 7
    assert value(text, "crmsync_api_request_duration_seconds_bucket", method="GET", le="0.1") == 0
    assert not [labels for labels, _ in samples(text, "crmsync_credits_charged_total") if "pid" in labels]


def test_a_new_pool_starts_from_zero(prom_dir: Path, serve_registry: Serve) -> None:
    run_proc(prom_dir, "requests", 5)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    prepare_multiproc_dir(environ=env)  # what `crmsync worker` does before the pool forks
    run_proc(prom_dir, "requests", 2)

    text = http_scrape(serve_registry(build_registry(None, prom_dir)))

    assert value(text, "crmsync_api_requests_total", api="rest", object="Lead", method="GET", outcome="200") == 2


def test_dramatiq_middleware_reaches_the_same_scrape(prom_dir: Path, serve_registry: Serve) -> None:
    run_proc(prom_dir, "dramatiq", 3)
    run_proc(prom_dir, "requests", 1)

    text = http_scrape(serve_registry(build_registry(None, prom_dir)))

    ping = {"actor_name": "metrics_ping", "queue_name": "metrics_test"}
    assert value(text, "crmsync_dramatiq_messages_total", **ping) == 3
    assert value(text, "crmsync_dramatiq_message_duration_seconds_count", **ping) == 3
    # Milliseconds became seconds: upstream's 5 ms bucket is le="0.005", its 15 min one le="900.0".
    assert value(text, "crmsync_dramatiq_message_duration_seconds_bucket", le="0.005", **ping) is not None
    assert value(text, "crmsync_dramatiq_message_duration_seconds_bucket", le="900.0", **ping) == 3
    assert "dramatiq_messages_total{" not in text.replace("crmsync_dramatiq_", "")
    assert value(text, "crmsync_credits_charged_total") == 2  # our instruments, same directory, same scrape
    # The worker stopped: its live in-progress gauge was marked dead rather than left behind.
    assert not list(prom_dir.glob("gauge_livesum_*.db"))


def test_middleware_serves_nothing_itself(prom_dir: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    middleware = prometheus_middleware(env)
    assert middleware is not None
    assert middleware.forks == []  # upstream forks a server on 0.0.0.0:9191
    assert env["dramatiq_prom_db"] == str(prom_dir)
    broker = StubBroker()
    assert install_worker_metrics(broker, env) is True
    assert any(type(m).__name__ == "CrmsyncPrometheus" for m in broker.middleware)


def test_mark_process_dead_drops_live_gauges_only(prom_dir: Path) -> None:
    (prom_dir / "gauge_livesum_4242.db").write_bytes(b"")
    (prom_dir / "counter_4242.db").write_bytes(b"")
    mark_process_dead(4242, {"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)})
    assert sorted(p.name for p in prom_dir.iterdir()) == ["counter_4242.db"]


def test_an_unreadable_file_drops_only_the_worker_families(prom_dir: Path, redis_client: redis.Redis,
                                                           serve_registry: Serve) -> None:
    run_proc(prom_dir, "requests", 1)
    # A file laid out like a metrics file (used size, then one entry) whose key is not JSON: upstream raises.
    entry = struct.pack("i", 8) + b"notjson!" + b"\0" * 4 + struct.pack("d", 1.0)
    header = struct.pack("i", 8 + len(entry)) + b"\0" * 4
    (prom_dir / "counter_999999.db").write_bytes((header + entry).ljust(64, b"\0"))

    text = http_scrape(serve_registry(build_registry(redis_client, prom_dir)))

    assert value(text, "crmsync_tenant_scrape_success") == 1
    assert value(text, "crmsync_credits_charged_total") is None
    (prom_dir / "counter_999999.db").unlink()
    assert value(http_scrape(serve_registry(build_registry(redis_client, prom_dir))),
                 "crmsync_credits_charged_total") == 2  # one request and one refunded
