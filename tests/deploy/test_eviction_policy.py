"""A Redis that may evict credit windows is named wherever ops look: `crmsync status` (stderr), `crmsync worker` at
start (event redis_may_evict) and the metrics (crmsync_redis_maxmemory_policy_info, alerted on by
CrmsyncRedisMayEvict, tested by promtool in alerts_test.yml).

A real redis-server with the repository's ACL users and `maxmemory-policy volatile-lru` (what many managed services
default to), each command run as the user it runs as in production. The policy is read with INFO: none of these
users may run CONFIG GET, as on a managed Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from quota import CreditBucket
from quota.scripts import METER
from tests.conftest import wait_until
from tests.deploy.conftest import DEPLOY, AclRedis, acl_binary, acl_server, new_passwords
from worker.devstack.processes import stop_group
from worker.eviction import eviction_warning
from worker.metrics.server import build_registry, scrape

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


@pytest.fixture(scope="module")
def evicting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """A Redis whose maxmemory-policy is volatile-lru, with a tenant whose credits are being taken."""
    passwords = new_passwords()
    config = {"maxmemory": "256mb", "maxmemory-policy": "volatile-lru"}
    with acl_server(acl_binary(), tmp_path_factory.mktemp("evicting"), passwords, config) as server:
        acl = AclRedis(server.port, passwords)
        admin = acl.client("admin")
        CreditBucket(admin).set_limit("acme", 100_000, actor="eviction-test")
        admin.close()
        yield acl


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    return {**env, "REDIS_URL": url, "CRMSYNC_LOG_FORMAT": "json", **extra}


def test_the_users_cannot_read_the_config_only_info(evicting: AclRedis) -> None:
    for user in ("admin", "worker", "metrics"):
        client = evicting.client(user)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.config_get("maxmemory-policy")
            assert client.info("memory")["maxmemory_policy"] == "volatile-lru"
        finally:
            client.close()


@pytest.mark.parametrize("as_json", [False, True])
def test_status_names_the_policy(evicting: AclRedis, as_json: bool) -> None:
    shown = subprocess.run([CRMSYNC, "status", *(["--json"] if as_json else [])], env=_env(evicting.url("admin")),
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.splitlines()
    assert len(lines) == 1, shown.stderr
    assert lines[0].startswith("warning: Redis maxmemory-policy is volatile-lru, not noeviction: ")
    assert "maxmemory-policy noeviction" in lines[0]
    if as_json:
        assert [row["tenant"] for row in json.loads(shown.stdout)] == ["acme"]  # stdout stays JSON
    else:
        assert "acme" in shown.stdout


def test_the_worker_names_the_policy_at_start_and_loads_the_metering_script(evicting: AclRedis,
                                                                             tmp_path: Path) -> None:
    breakglass = evicting.client("breakglass")
    breakglass.script_flush()
    log = tmp_path / "worker.log"
    env = _env(evicting.url("worker"), CRMSYNC_DATA_DIR=str(tmp_path / "data"),
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    with log.open("wb") as out:
        process = subprocess.Popen([CRMSYNC, "worker", "--processes", "1", "--threads", "1"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        line = wait_until(lambda: next((line for line in log.read_text().splitlines() if "redis_may_evict" in line),
                                       None), 60, "the worker's redis_may_evict event", detail=log.read_text)
        event = json.loads(line)
        assert event["level"] == "warning"
        assert event["policy"] == "volatile-lru"
        assert "evict credit windows" in event["detail"]
        assert breakglass.script_exists(METER.sha) == [True]  # so the metrics user, which may not load it, reads
    finally:
        stop_group(process)
        breakglass.close()
    assert "redis_check_failed" not in log.read_text()


def test_the_metrics_report_the_policy(evicting: AclRedis) -> None:
    worker = evicting.client("worker")
    CreditBucket(worker).take("acme", 1)  # a worker loads the metering script
    worker.close()
    client = evicting.client("metrics")
    try:
        text = scrape(build_registry(client, None))
    finally:
        client.close()
    assert 'crmsync_redis_maxmemory_policy_info{policy="volatile-lru"} 1.0' in text
    assert "crmsync_tenant_scrape_success 1.0" in text


def test_the_metrics_leave_the_policy_out_when_redis_cannot_be_asked() -> None:
    closed = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    text = scrape(build_registry(closed, None))
    assert "crmsync_redis_maxmemory_policy_info{" not in text
    assert "crmsync_tenant_scrape_success 0.0" in text


def test_the_warning_names_every_unsafe_policy() -> None:
    assert eviction_warning("noeviction") is None
    for policy in ("volatile-lru", "volatile-ttl", "allkeys-lru", "volatile-lfu", "allkeys-random"):
        warning = eviction_warning(policy)
        assert warning is not None
        assert f"maxmemory-policy is {policy}, not noeviction" in warning
    unknown = eviction_warning(None)
    assert unknown is not None
    assert "not reported" in unknown


def test_the_shipped_redis_conf_never_evicts_and_keeps_an_aof(tmp_path: Path) -> None:
    # deploy/redis/redis.conf as compose and Kubernetes run it, but on a free loopback port in a temporary dir.
    conf = (DEPLOY / "redis" / "redis.conf").read_text().splitlines()
    directives = dict(line.split(" ", 1) for line in conf if line and not line.startswith("#"))
    assert directives.pop("dir") == "/data"
    for local in ("port", "bind", "protected-mode"):
        directives.pop(local)
    directives = {name: value.strip('"') for name, value in directives.items()}
    passwords = new_passwords()
    with acl_server(acl_binary(), tmp_path, passwords, directives) as server:
        client = AclRedis(server.port, passwords).client("metrics")
        try:
            memory, persistence = client.info("memory"), client.info("persistence")
        finally:
            client.close()
        shown = subprocess.run([CRMSYNC, "status"], env=_env(AclRedis(server.port, passwords).url("admin")),
                               capture_output=True, text=True, timeout=60, check=False)
    assert memory["maxmemory_policy"] == "noeviction"
    assert persistence["aof_enabled"] == 1
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""  # nothing to warn about
