"""The Redis ACL model of deploy/redis/users.acl, on a real redis-server loading the rendered file.

worker (workers and schedulers) writes its working state but only reads what admins decide; admin writes
everything; metrics only reads; the default user is off. Every key format in worker/keys.py is classified,
so a new key fails here until it is given to the right users.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import NoBackoff
from redis.retry import Retry

from quota import CreditBucket, QuotaUnavailable
from quota.scripts import METER
from tests.deploy.conftest import AclRedis, render_acl
from worker import keys
from worker.broker import NAMESPACE
from worker.jobs.parking import ParkedJob, PauseStore
from worker.metrics.server import build_registry, scrape
from worker.salesforce.connections import ConnectionStore
from worker.scheduling.scheduler import Scheduler
from worker.scheduling.schedules import ScheduleStore

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
# Only admins write these: the limit config and its audit, the tenant registry, connections, schedules and their
# priorities, and notification channels. Every other key is workers' working state.
ADMIN_ONLY = {"TENANTS", "CONNECTIONS", "NOTIFY_CONFIG", "SCHEDULES", "SCHEDULE_PRIORITY", "config", "connection",
              "audit"}
SAMPLE_ARGS = {"tenant": "acme", "sobject": "Lead", "job_id": "0123abcd", "kind": "quota_warning",
               "window": "1795996800"}
BROKER_KEYS = [f"{NAMESPACE}:crmsync", f"{NAMESPACE}:crmsync.msgs", f"{NAMESPACE}:crmsync.XQ",
               f"{NAMESPACE}:crmsync.XQ.msgs", f"{NAMESPACE}:__heartbeats__", f"{NAMESPACE}:__acks__.w1.crmsync",
               f"{NAMESPACE}:crmsync-notify", f"{NAMESPACE}:crmsync-notify.DQ"]


def every_key() -> Iterator[tuple[str, str]]:
    """(name in worker.keys, a sample key) for every key format."""
    for name in keys.__all__:
        value = getattr(keys, name)
        if name in ("PREFIX", "scope"):  # parts of keys, not keys
            continue
        if isinstance(value, str):
            yield name, value
            continue
        params = inspect.signature(value).parameters
        key = value(*(SAMPLE_ARGS[p] for p in params))
        yield name, key + ("1795996800" if name == "window_prefix" else "")


def allowed(client: redis.Redis, user: str, *command: str) -> bool:
    reply = client.execute_command("ACL", "DRYRUN", user, *command)
    return bool(reply in (b"OK", "OK"))


@pytest.fixture
def admin(acl_redis: AclRedis) -> Iterator[redis.Redis]:
    client = acl_redis.client("admin")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def worker(acl_redis: AclRedis) -> Iterator[redis.Redis]:
    client = acl_redis.client("worker")
    yield client
    client.close()


def crmsync(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "CRMSYNC_ACTOR": "acl-test"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run([CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_every_key_format_is_classified() -> None:
    names = {name for name, _ in every_key()}
    assert names >= ADMIN_ONLY, f"ADMIN_ONLY names keys that no longer exist: {ADMIN_ONLY - names}"


@pytest.mark.parametrize(("name", "key"), list(every_key()))
def test_key_permissions(admin: redis.Redis, name: str, key: str) -> None:
    worker_writes = name not in ADMIN_ONLY
    assert allowed(admin, "worker", "GET", key), f"worker must read {key}"
    assert allowed(admin, "worker", "SET", key, "x") is worker_writes, \
        f"worker {'must' if worker_writes else 'must not'} write {key} ({name})"
    assert allowed(admin, "admin", "SET", key, "x")
    assert allowed(admin, "metrics", "GET", key)
    assert not allowed(admin, "metrics", "SET", key, "x")
    assert not allowed(admin, "metrics", "DEL", key)


@pytest.mark.parametrize("key", BROKER_KEYS)
def test_workers_own_the_broker_namespace(admin: redis.Redis, key: str) -> None:
    assert allowed(admin, "worker", "RPUSH", key, "x")
    assert not allowed(admin, "metrics", "RPUSH", key, "x")


def test_the_metering_script_runs_for_worker_and_metrics_on_exactly_its_keys(admin: redis.Redis) -> None:
    config, windows = keys.config("acme"), keys.window_prefix("acme")
    for user in ("worker", "metrics"):
        assert allowed(admin, user, "EVALSHA", METER.sha, "2", config, windows, "0", "", "", "0")
        assert not allowed(admin, user, "EVALSHA", METER.sha, "2", keys.audit("acme"), windows, "0", "", "", "0")
        assert not allowed(admin, user, "EVALSHA", METER.sha, "2", "other:key", windows, "0", "", "", "0")
    assert not allowed(admin, "worker", "FLUSHDB")
    assert not allowed(admin, "worker", "CONFIG", "SET", "appendonly", "no")
    assert allowed(admin, "worker", "KEYS", f"{NAMESPACE}:__acks__.w1*")  # Dramatiq's maintenance needs it


def test_worker_takes_and_refunds_credits(acl_redis: AclRedis, admin: redis.Redis, worker: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    bucket = CreditBucket(worker)
    grant = bucket.take("acme", 3)
    assert (grant.granted, grant.remaining) == (True, 99_997)
    assert bucket.refund("acme", 1, grant=grant) == 1
    assert bucket.status("acme").used == 2
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.script_flush()


def test_worker_loads_the_metering_script_itself(acl_redis: AclRedis, admin: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    admin.script_flush()
    worker = acl_redis.client("worker")
    assert CreditBucket(worker).take("acme", 1).granted  # NOSCRIPT, then SCRIPT LOAD and EVALSHA
    worker.close()


def test_worker_parks_pauses_and_resumes(admin: redis.Redis, worker: redis.Redis) -> None:
    pauses = PauseStore(worker)
    job = ParkedJob("crmsync_pull", {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "seq": 1})
    assert pauses.park("acme", job, "quota_exhausted", "bucket empty")
    assert pauses.pause("globex", "auth_failed", "401 twice")
    assert pauses.parked_count("acme") == 1
    first = pauses.first_parked("acme")
    assert first is not None
    pauses.remove_parked("acme", first[0])
    assert pauses.unpause("acme") is not None
    pauses.forget_if_idle("acme")
    assert pauses.paused_tenants() == ["globex"]
    lock = worker.lock(keys.lock("acme", "Lead"), timeout=10, blocking=False)
    assert lock.acquire()
    lock.release()
    assert worker.set(keys.notified("acme", "quota_exhausted", "1795996800"), "n1", nx=True, ex=60)
    worker.xadd(keys.NOTIFICATIONS, {"kind": "quota_exhausted", "tenant": "acme"}, maxlen=10_000)
    worker.hset(keys.org_usage("acme"), mapping={"used": 5, "max": 100_000, "at": 1})
    worker.hset(keys.pull_checkpoint("acme", "Lead"), "state", "{}")


def test_scheduler_lease_with_the_worker_user(admin: redis.Redis, worker: redis.Redis) -> None:
    ScheduleStore(admin).set("acme", "Lead", 900)
    scheduler = Scheduler(worker, instance_id="acl-test", tick_s=1, lease_ttl_s=5)
    assert scheduler.hold_lease()
    assert scheduler.renew_lease()
    worker.zadd(keys.SCHEDULE_DUE, {"acme/Lead": 1.0}, xx=True)
    with pytest.raises(redis.exceptions.NoPermissionError):
        ScheduleStore(worker).set("acme", "Lead", 60)


def test_worker_enqueues_and_consumes_through_the_broker(acl_redis: AclRedis, admin: redis.Redis) -> None:
    broker = RedisBroker(url=acl_redis.url("worker"), namespace=NAMESPACE)
    broker.maintenance_chance = 1_000_000  # every dispatch runs Dramatiq's maintenance (KEYS, dead workers)
    try:
        broker.declare_queue("crmsync")
        message: Message[Any] = Message(queue_name="crmsync", actor_name="crmsync_pull", args=(),
                                        kwargs={"probe": True}, options={})
        broker.enqueue(message)
        consumer = broker.consume("crmsync", prefetch=1, timeout=100)
        received = None
        deadline = time.monotonic() + 30
        while received is None and time.monotonic() < deadline:
            received = next(consumer)
        assert received is not None
        assert received.message_id == message.message_id
        consumer.ack(received)
        consumer.close()
    finally:
        broker.close()


def test_worker_cannot_change_the_limit(acl_redis: AclRedis, admin: redis.Redis, worker: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    refused = crmsync(acl_redis.url("worker"), "quota", "set", "acme", "900000")
    assert refused.returncode != 0
    assert "NOPERM" in refused.stderr or "no permissions" in refused.stderr, refused.stderr
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.hset(keys.config("acme"), "limit", "900000")
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.delete(keys.config("acme"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.sadd(keys.TENANTS, "mallory")
    with pytest.raises(redis.ResponseError):  # a script's own commands are checked too
        worker.eval("return redis.call('hset', KEYS[1], 'limit', '900000')", 2,
                    keys.config("acme"), keys.window_prefix("acme"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        ConnectionStore(worker).redis.sadd(keys.CONNECTIONS, "acme")
    assert CreditBucket(admin).status("acme").limit == 100_000
    assert admin.llen(keys.audit("acme")) == 1


def test_admin_changes_the_limit(acl_redis: AclRedis, admin: redis.Redis) -> None:
    done = crmsync(acl_redis.url("admin"), "quota", "set", "acme", "150000")
    assert done.returncode == 0, done.stderr
    assert CreditBucket(admin).status("acme").limit == 150_000
    shown = crmsync(acl_redis.url("worker"), "status", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "acme" in shown.stdout


def test_metrics_reads_tenant_gauges_and_writes_nothing(acl_redis: AclRedis, admin: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    CreditBucket(admin).take("acme", 7)
    admin.script_flush()
    client = acl_redis.client("metrics")
    try:
        text = scrape(build_registry(client, None))
        assert "crmsync_tenant_scrape_success 1.0" in text
        assert "crmsync_tenant_scrape_errors 0.0" in text
        assert 'crmsync_quota_used{tenant="acme"} 7.0' in text
        with pytest.raises(QuotaUnavailable):
            CreditBucket(client).take("acme", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(keys.window_prefix("acme") + "1", 0)
    finally:
        client.close()
    assert CreditBucket(admin).status("acme").used == 7


def test_the_default_user_is_off(acl_redis: AclRedis) -> None:
    # No retries: redis-py retries connection-class errors (an AUTH refusal is one) with backoff.
    once: dict[str, Any] = {"socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0)}
    anonymous = redis.Redis(host="127.0.0.1", port=acl_redis.port, **once)
    try:
        with pytest.raises(redis.RedisError, match=r"(?i)auth"):
            anonymous.get(keys.TENANTS)
        with pytest.raises(redis.RedisError):
            anonymous.set("crmsync:anything", "x")
    finally:
        anonymous.close()
    as_default = redis.Redis(host="127.0.0.1", port=acl_redis.port, username="default", password="", **once)
    try:
        with pytest.raises(redis.RedisError):
            as_default.ping()
    finally:
        as_default.close()
    with pytest.raises(redis.RedisError):
        redis.Redis.from_url(acl_redis.url("worker").replace(acl_redis.passwords["worker"], "wrong"), **once).ping()


def test_render_acl_refuses_a_missing_password(tmp_path: Path) -> None:
    result = render_acl(tmp_path / "users.acl", {"admin": "a", "worker": "w"})
    assert result.returncode != 0
    assert "CRMSYNC_REDIS_METRICS_PASSWORD" in result.stderr
    assert not (tmp_path / "users.acl").exists()


def test_rendered_acl_holds_hashes_only(tmp_path: Path) -> None:
    passwords = {"admin": "admin-secret-1", "worker": "worker-secret-2", "metrics": "metrics-secret-3"}
    assert render_acl(tmp_path / "users.acl", passwords).returncode == 0
    text = (tmp_path / "users.acl").read_text()
    assert not any(pw in text for pw in passwords.values())
    assert "@" not in text.replace("+@", "").replace("-@", "")
    assert (tmp_path / "users.acl").stat().st_mode & 0o077 == 0
    assert all(line.startswith("user ") for line in text.splitlines())
