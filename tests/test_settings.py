"""``worker/settings.py`` is the one place that reads settings from the environment, and it refuses bad ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.settings import BrokerSettings, WorkerSettings, log_format, metrics_objects, redis_url

ROOT = Path(__file__).resolve().parent.parent
# Reading a variable: os.environ.get / os.getenv / os.environ[...] used as a value.
_READ = re.compile(r"os\.getenv\(|os\.environ\.get\(|os\.environ\[[^\]]+\](?!\s*=)")
# Where reading the environment is the point: secret references name a variable that holds a secret.
_ALLOWED = {"worker/settings.py", "worker/secrets.py"}


def test_no_other_module_reads_the_environment() -> None:
    readers = sorted(str(p.relative_to(ROOT)) for package in ("quota", "worker", "emulator")
                     for p in (ROOT / package).rglob("*.py") if _READ.search(p.read_text("utf-8")))
    assert [r for r in readers if r not in _ALLOWED] == []


def test_defaults() -> None:
    assert redis_url({}) == "redis://127.0.0.1:6379/0"
    assert WorkerSettings.from_env({}) == WorkerSettings()
    assert BrokerSettings.from_env({}) == BrokerSettings()
    assert log_format({}) is None
    assert metrics_objects({"CRMSYNC_METRICS_OBJECTS": " Invoice__c, ,Order "}) == ("Invoice__c", "Order")


def test_values_are_read() -> None:
    settings = WorkerSettings.from_env({"CRMSYNC_DATA_DIR": "/d", "CRMSYNC_QUOTA_WARNING_SHARES": "0.95,0.5",
                                        "CRMSYNC_REQUEST_TIMEOUT": "30", "CRMSYNC_JOB_SLICE_SECONDS": "60"})
    assert (settings.data_dir, settings.quota_warning_shares) == (Path("/d"), (0.5, 0.95))
    assert (settings.request_timeout, settings.job_slice_seconds) == (30.0, 60.0)
    broker = BrokerSettings.from_env({"REDIS_URL": "redis://h:1/2", "CRMSYNC_BROKER_MAINTENANCE_CHANCE": "5e9"})
    assert (broker.url, broker.maintenance_chance) == ("redis://h:1/2", 1_000_000)


@pytest.mark.parametrize(("name", "value"), [
    ("CRMSYNC_REQUEST_TIMEOUT", "nan"), ("CRMSYNC_REQUEST_TIMEOUT", "inf"), ("CRMSYNC_REQUEST_TIMEOUT", "0"),
    ("CRMSYNC_JOB_SLICE_SECONDS", "-5"), ("CRMSYNC_ORG_PROBE_SECONDS", "soon"),
    ("CRMSYNC_RETRY_ATTEMPTS", "2.5"), ("CRMSYNC_RETRY_MAX_WAIT", "x"),
    ("CRMSYNC_ORG_PAUSE_SHARE", "1.5"), ("CRMSYNC_ORG_RESUME_SHARE", "0"),
    ("CRMSYNC_QUOTA_WARNING_SHARES", "0.8,lots"), ("CRMSYNC_QUOTA_WARNING_SHARES", "2"),
])
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        WorkerSettings.from_env({name: value})


def test_resume_share_must_be_below_pause_share() -> None:
    with pytest.raises(ValueError, match="CRMSYNC_ORG_RESUME_SHARE"):
        WorkerSettings.from_env({"CRMSYNC_ORG_PAUSE_SHARE": "0.5", "CRMSYNC_ORG_RESUME_SHARE": "0.6"})


@pytest.mark.parametrize("name", ["CRMSYNC_BROKER_HEARTBEAT_TIMEOUT", "CRMSYNC_BROKER_MAINTENANCE_CHANCE"])
def test_bad_broker_settings_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BrokerSettings.from_env({name: "-1"})


def test_bad_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="CRMSYNC_LOG_FORMAT"):
        log_format({"CRMSYNC_LOG_FORMAT": "xml"})
