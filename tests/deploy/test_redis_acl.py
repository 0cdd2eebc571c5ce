"""The Redis ACL model of deploy/redis/users.acl, on a real redis-server loading the rendered file.

Each user runs its real code paths here (the `crmsync` admin commands as admin, the bucket, parking and the broker
as worker, `crmsync scheduler` as scheduler, a scrape as metrics) and is refused what it must not do: admin has
no @dangerous or @admin command, worker no FUNCTION, scheduler nothing beyond scheduling, metrics only reads the
keys its gauges read. Every key format in worker/keys.py is classified per user, so a new key fails here until
it is given to the right users.
"""

from __future__ import annotations

import inspect
import os
import signal
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
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from quota import CreditBucket, QuotaUnavailable
from quota.bucket import meter_call
from quota.scripts import CONFIGURE, METER
from tests.conftest import wait_until
from tests.deploy.conftest import USERS, AclRedis, render_acl
from worker import keys
from worker.broker import NAMESPACE
from worker.enqueue import active_pull
from worker.jobs.parking import ParkedJob, PauseStore
from worker.jobs.state import JobStore
from worker.metrics.server import build_registry, scrape
from worker.scheduling.scheduler import Scheduler
from worker.scheduling.schedules import ScheduleStore

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
SAMPLE_ARGS = {"tenant": "acme", "sobject": "Lead", "job_id": "0123abcd", "kind": "quota_warning",
               "window": "1795996800", "notification_id": "1795996800-0", "target": "webhook:0a1b2c3d",
               "end": 1795996800}
BROKER_KEYS = [f"{NAMESPACE}:crmsync", f"{NAMESPACE}:crmsync.msgs", f"{NAMESPACE}:crmsync.XQ",
               f"{NAMESPACE}:crmsync.XQ.msgs", f"{NAMESPACE}:__heartbeats__", f"{NAMESPACE}:__acks__.w1.crmsync",
               f"{NAMESPACE}:crmsync-notify", f"{NAMESPACE}:crmsync-notify.DQ"]
SERVICES = ("worker", "scheduler", "metrics")
# What each service user may do with each key format of worker.keys: "rw", "r" or "" (nothing). admin and
# breakglass read and write every crmsync key. Workers only read what admins decide (limits and their audit,
# the tenant registry, connections, notification channels) and never touch schedules; the scheduler reads
# schedules and pauses and writes only what queueing a pull writes; metrics reads what its gauges show.
ACCESS: dict[str, dict[str, str]] = {
    "TENANTS": {"worker": "r", "scheduler": "", "metrics": "r"},
    "CONNECTIONS": {"worker": "r", "scheduler": "", "metrics": ""},
    "connection": {"worker": "r", "scheduler": "", "metrics": ""},
    "config": {"worker": "r", "scheduler": "", "metrics": "r"},
    "audit": {"worker": "r", "scheduler": "", "metrics": ""},
    "window_prefix": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "rolling_window": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "daily_counter": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "org_usage": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "bulk_budget": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "pull_checkpoint": {"worker": "rw", "scheduler": "", "metrics": ""},
    "legacy_pull_checkpoint": {"worker": "rw", "scheduler": "", "metrics": ""},
    "push_records": {"worker": "rw", "scheduler": "", "metrics": ""},
    "job": {"worker": "rw", "scheduler": "rw", "metrics": ""},
    "lock": {"worker": "rw", "scheduler": "", "metrics": ""},
    "active_pulls": {"worker": "rw", "scheduler": "rw", "metrics": ""},
    "sequence": {"worker": "rw", "scheduler": "rw", "metrics": ""},
    "pause": {"worker": "rw", "scheduler": "r", "metrics": "r"},
    "parked": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "parked_essential": {"worker": "rw", "scheduler": "", "metrics": "r"},
    "resuming": {"worker": "rw", "scheduler": "", "metrics": ""},
    "notified": {"worker": "rw", "scheduler": "", "metrics": ""},
    "delivery": {"worker": "rw", "scheduler": "", "metrics": ""},
    "PAUSED": {"worker": "rw", "scheduler": "r", "metrics": "r"},
    "NOTIFICATIONS": {"worker": "rw", "scheduler": "", "metrics": ""},
    "NOTIFY_CONFIG": {"worker": "r", "scheduler": "", "metrics": ""},
    "SCHEDULES": {"worker": "", "scheduler": "r", "metrics": ""},
    "SCHEDULE_PRIORITY": {"worker": "", "scheduler": "r", "metrics": ""},
    "SCHEDULE_DUE": {"worker": "", "scheduler": "rw", "metrics": ""},
    "SCHEDULER_LEASE": {"worker": "", "scheduler": "rw", "metrics": ""},
    "RESUMER_LEASE": {"worker": "rw", "scheduler": "", "metrics": ""},
}
# Commands no service user and not admin may run: server configuration, users, wiping data, replication,
# persistence, modules, debugging, watching other clients, functions, arbitrary Lua. Only breakglass may.
FORBIDDEN = [
    ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"), ("CONFIG", "GET", "maxmemory-policy"),
    ("ACL", "SETUSER", "mallory", "on", ">pw", "+@all", "~*"), ("ACL", "LIST"), ("ACL", "DELUSER", "worker"),
    ("FLUSHALL",), ("FLUSHDB",), ("DEBUG", "SLEEP", "0"), ("SHUTDOWN", "NOSAVE"), ("REPLICAOF", "NO", "ONE"),
    ("SAVE",), ("BGREWRITEAOF",), ("MODULE", "LOAD", "/tmp/x.so"), ("MONITOR",), ("CLIENT", "KILL", "ID", "1"),
    ("CLIENT", "LIST"), ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("FUNCTION", "FLUSH"),
    ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() return 1 end)"),
    ("FUNCTION", "DELETE", "crmsync"), ("FUNCTION", "RESTORE", "x"), ("FCALL", "f", "0"),
    ("EVAL", "return redis.call('FLUSHALL')", "0"), ("SWAPDB", "0", "1"), ("MIGRATE", "h", "1", "k", "0", "1"),
]


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
def breakglass(acl_redis: AclRedis) -> Iterator[redis.Redis]:
    client = acl_redis.client("breakglass")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _as_user(acl_redis: AclRedis, user: str) -> Iterator[redis.Redis]:
    # Each service's client, opened after breakglass has emptied the database.
    client = acl_redis.client(user)
    yield client
    client.close()


@pytest.fixture
def admin(acl_redis: AclRedis, breakglass: redis.Redis) -> Iterator[redis.Redis]:
    yield from _as_user(acl_redis, "admin")


@pytest.fixture
def worker(acl_redis: AclRedis, breakglass: redis.Redis) -> Iterator[redis.Redis]:
    yield from _as_user(acl_redis, "worker")


@pytest.fixture
def scheduler(acl_redis: AclRedis, breakglass: redis.Redis) -> Iterator[redis.Redis]:
    yield from _as_user(acl_redis, "scheduler")


@pytest.fixture
def metrics(acl_redis: AclRedis, breakglass: redis.Redis) -> Iterator[redis.Redis]:
    yield from _as_user(acl_redis, "metrics")


def crmsync(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "REDIS_URL": url, "CRMSYNC_ACTOR": "acl-test", **env}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run([CRMSYNC, *args], env=environ, capture_output=True, text=True, timeout=120, check=False)


# -- keys, per user -------------------------------------------------------------------------------------------

def test_every_key_format_is_classified() -> None:
    names = {name for name, _ in every_key()}
    assert names == set(ACCESS), (f"give these keys to the right users in deploy/redis/users.acl and ACCESS: "
                                  f"{sorted(names - set(ACCESS))}; gone: {sorted(set(ACCESS) - names)}")


@pytest.mark.parametrize(("name", "key"), list(every_key()))
def test_key_permissions(breakglass: redis.Redis, name: str, key: str) -> None:
    for user in SERVICES:
        access = ACCESS[name][user]
        # GET reads and DEL writes: every service user may run both, so only the key patterns decide.
        assert allowed(breakglass, user, "GET", key) is ("r" in access), f"{user} read {key}: {access or 'none'}"
        assert allowed(breakglass, user, "DEL", key) is ("w" in access), f"{user} write {key}: {access or 'none'}"
    for user in ("admin", "breakglass"):
        assert allowed(breakglass, user, "GET", key)
        assert allowed(breakglass, user, "SET", key, "x")
    assert not allowed(breakglass, "metrics", "SET", key, "x")
    assert not allowed(breakglass, "metrics", "HSET", key, "f", "x")


@pytest.mark.parametrize("key", BROKER_KEYS)
def test_workers_and_schedulers_own_the_broker_namespace(breakglass: redis.Redis, key: str) -> None:
    for user in ("worker", "scheduler", "admin"):
        assert allowed(breakglass, user, "RPUSH", key, "x")
    assert not allowed(breakglass, "metrics", "GET", key)


def test_only_breakglass_reaches_keys_outside_crmsync(breakglass: redis.Redis) -> None:
    assert allowed(breakglass, "breakglass", "SET", "other:key", "x")
    for user in ("admin", *SERVICES):
        assert not allowed(breakglass, user, "GET", "other:key")


@pytest.mark.parametrize("command", FORBIDDEN, ids=lambda c: " ".join(c[:2]))
def test_dangerous_commands_are_breakglass_only(breakglass: redis.Redis, command: tuple[str, ...]) -> None:
    for user in ("admin", *SERVICES):
        assert not allowed(breakglass, user, *command), f"{user} may run {' '.join(command)}"
    assert allowed(breakglass, "breakglass", *command)


# What redis-py's RedisCluster sends to map slots and follow them while they move, and what crmsync's topology
# check at start asks (quota/connection.py): every service may; changing the cluster is breakglass's (and the
# cluster nodes' clusteradmin, tests/deploy/test_scale_out_live.py).
CLUSTER_CLIENT = [("CLUSTER", "SLOTS"), ("CLUSTER", "SHARDS"), ("CLUSTER", "NODES"), ("CLUSTER", "INFO"),
                  ("INFO", "cluster"), ("READONLY",), ("READWRITE",), ("ASKING",)]
CLUSTER_CHANGES = [("CLUSTER", "MEET", "127.0.0.1", "7000"), ("CLUSTER", "ADDSLOTS", "1"), ("CLUSTER", "FAILOVER"),
                   ("CLUSTER", "RESET"), ("CLUSTER", "FORGET", "x"), ("CLUSTER", "SETSLOT", "1", "STABLE"),
                   ("CLUSTER", "REPLICATE", "x"), ("CLUSTER", "FLUSHSLOTS")]


@pytest.mark.parametrize("user", ["admin", *SERVICES])
def test_every_service_may_use_a_cluster_and_change_none(breakglass: redis.Redis, user: str) -> None:
    for command in CLUSTER_CLIENT:
        assert allowed(breakglass, user, *command), f"{user} may not run {' '.join(command)}"
    for command in CLUSTER_CHANGES:
        assert not allowed(breakglass, user, *command), f"{user} may run {' '.join(command)}"
        assert allowed(breakglass, "breakglass", *command)


def test_breakglass_repairs_redis_itself(breakglass: redis.Redis) -> None:
    assert breakglass.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert any(rule.startswith("user admin ") for rule in breakglass.acl_list())


# -- admin: every crmsync admin command, nothing dangerous --------------------------------------------------

def test_admin_runs_every_admin_command(acl_redis: AclRedis, breakglass: redis.Redis, worker: redis.Redis,
                                        tmp_path: Path) -> None:
    url = acl_redis.url("admin")
    secret = tmp_path / "acme.secret"
    secret.write_text("consumer-secret")
    smtp = tmp_path / "smtp.password"
    smtp.write_text("smtp-password")
    secrets_env = {"CRMSYNC_SECRET_DIRS": str(tmp_path)}

    def ok(*args: str) -> str:
        done = crmsync(url, *args, **secrets_env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "NOPERM" not in done.stderr, done.stderr
        assert "warning" not in done.stderr, done.stderr
        return done.stdout

    ok("quota", "set", "acme", "150000", "--reserve", "1000")
    assert "150000" in ok("quota", "show", "acme", "--json")
    assert "acl-test" in ok("quota", "history", "acme")
    ok("connect", "acme", "--environment", "production", "--login-url", "https://login.salesforce.com",
       "--client-id", "client-id", "--client-secret-file", str(secret))
    assert "acme" in ok("connections")
    ok("schedule", "set", "acme", "Lead", "--every", "15m")
    assert "Lead" in ok("schedule", "list")
    ok("schedule", "remove", "acme", "Lead")
    ok("notify", "webhook", "add", "https://hooks.example.com/services/T000/B000/XXXX")
    ok("notify", "email", "set", "--host", "smtp.example.com", "--port", "587", "--from", "crmsync@example.com",
       "--to", "ops@example.com", "--username", "crmsync", "--password-file", str(smtp))
    assert "smtp.example.com" in ok("notify", "show")
    ok("notify", "email", "clear")
    ok("notifications")
    # A paused tenant with a parked job: resume re-queues it through the broker.
    PauseStore(worker).park("acme", ParkedJob("crmsync_pull", {"tenant": "acme", "sobject": "Lead",
                                                               "job_id": "j1", "seq": 1}), "auth_failed", "401")
    assert "1 parked jobs queued again" in ok("resume", "acme")
    assert breakglass.hlen(f"{NAMESPACE}:crmsync.msgs") == 1
    records = tmp_path / "contacts.jsonl"
    records.write_text('{"External_Id__c": "c1", "LastName": "One"}\n')
    ok("sync", "acme", "Account")
    ok("push", "acme", "Contact", "--file", str(records), "--external-id", "External_Id__c")
    assert breakglass.hlen(f"{NAMESPACE}:crmsync.msgs") == 3
    assert "acme" in ok("status")


@pytest.mark.parametrize("user", ["admin", "worker", "scheduler", "metrics"])
def test_a_service_user_is_refused_dangerous_commands_by_redis(acl_redis: AclRedis, breakglass: redis.Redis,
                                                              user: str) -> None:
    client = acl_redis.client(user)
    try:
        for command in (("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"), ("FLUSHALL",), ("ACL", "LIST"),
                        ("FUNCTION", "FLUSH"), ("SCRIPT", "FLUSH")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
    finally:
        client.close()
    assert breakglass.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


# -- worker: its working state, the bucket, the broker; no FUNCTION, no admin data --------------------------

def test_worker_takes_and_refunds_credits(admin: redis.Redis, worker: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    bucket = CreditBucket(worker)
    grant = bucket.take("acme", 3)
    assert (grant.granted, grant.remaining) == (True, 99_997)
    assert bucket.refund("acme", 1, grant=grant) == 1
    assert bucket.status("acme").used == 2
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.script_flush()


def test_worker_loads_the_metering_script_itself(acl_redis: AclRedis, admin: redis.Redis,
                                                 breakglass: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    breakglass.script_flush()
    worker = acl_redis.client("worker")
    assert CreditBucket(worker).take("acme", 1).granted  # NOSCRIPT, then SCRIPT LOAD and EVALSHA
    worker.close()


def test_worker_parks_pauses_and_resumes(worker: redis.Redis) -> None:
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
    assert worker.info("memory")["maxmemory_policy"] == "noeviction"  # what `crmsync worker` checks at start


def test_worker_enqueues_and_consumes_through_the_broker(acl_redis: AclRedis, breakglass: redis.Redis) -> None:
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


def test_worker_cannot_change_what_admins_decide(acl_redis: AclRedis, admin: redis.Redis,
                                                 worker: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    ScheduleStore(admin).set("acme", "Lead", 900)
    result = crmsync(acl_redis.url("worker"), "quota", "set", "acme", "900000")
    assert result.returncode != 0
    assert "NOPERM" in result.stderr or "no permissions" in result.stderr, result.stderr
    for write in (lambda: worker.hset(keys.config("acme"), "limit", "900000"),
                  lambda: worker.delete(keys.config("acme")),
                  lambda: worker.sadd(keys.TENANTS, "mallory"),
                  lambda: worker.sadd(keys.CONNECTIONS, "acme"),
                  lambda: worker.hset(keys.NOTIFY_CONFIG, "webhooks", "[]"),
                  lambda: worker.hgetall(keys.SCHEDULES),  # schedules are the scheduler's
                  lambda: worker.set(keys.SCHEDULER_LEASE, "me"),
                  lambda: ScheduleStore(worker).set("acme", "Lead", 60)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    with pytest.raises(redis.ResponseError):  # no EVAL; and a loaded script's own commands are checked too
        worker.eval("return redis.call('hset', KEYS[1], 'limit', '900000')", 2,
                    keys.config("acme"), keys.window_prefix("acme"))
    assert CreditBucket(admin).status("acme").limit == 100_000
    assert admin.llen(keys.audit("acme")) == 1


def test_worker_cannot_manage_functions(worker: redis.Redis) -> None:
    library = "#!lua name=crmsync\nredis.register_function('f', function() return 1 end)"
    for command in (("FUNCTION", "LOAD", library), ("FUNCTION", "LOAD", "REPLACE", library),
                    ("FUNCTION", "DELETE", "crmsync"), ("FUNCTION", "FLUSH"), ("FUNCTION", "RESTORE", "x"),
                    ("FUNCTION", "KILL"), ("FCALL", "f", "0"), ("EVAL", "return 1", "0")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.execute_command(*command)


def test_status_runs_as_admin_and_as_worker(acl_redis: AclRedis, admin: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 150_000, actor="acl-test")
    for user in ("admin", "worker"):
        shown = crmsync(acl_redis.url(user), "status", "--json")
        assert shown.returncode == 0, shown.stderr
        assert "acme" in shown.stdout
        assert shown.stderr == "", shown.stderr  # noeviction: nothing to warn about, and INFO is allowed


# -- scheduler: schedules, its lease, queueing pulls; nothing else --------------------------------------------

def test_the_scheduler_queues_due_pulls_as_the_scheduler_user(acl_redis: AclRedis, admin: redis.Redis,
                                                              worker: redis.Redis, breakglass: redis.Redis,
                                                              tmp_path: Path) -> None:
    schedules = ScheduleStore(admin)
    schedules.set("acme", "Lead", 900)
    schedules.set("globex", "Lead", 900)
    PauseStore(worker).pause("globex", "auth_failed", "401")  # paused: stays due, nothing queued
    log = tmp_path / "scheduler.log"
    env = {**os.environ, "REDIS_URL": acl_redis.url("scheduler"), "CRMSYNC_LOG_FORMAT": "json",
           "CRMSYNC_BROKER_MAINTENANCE_CHANCE": "1000000"}  # every send also runs Dramatiq's maintenance
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as out:
        process = subprocess.Popen([CRMSYNC, "scheduler", "--tick", "0.2", "--lease-ttl", "5",
                                    "--instance-id", "acl-scheduler"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        job_id = wait_until(lambda: active_pull(breakglass, "acme", "Lead"), 60,
                            "the scheduler to queue acme's pull", detail=log.read_text)
        record = JobStore(breakglass).get("acme", job_id)
        assert record is not None
        assert record.state == "queued"
        # The job is recorded first, then its message sent.
        wait_until(lambda: breakglass.hlen(f"{NAMESPACE}:crmsync.msgs") == 1, 30, "the pull's message",
                   detail=log.read_text)
        assert breakglass.get(keys.SCHEDULER_LEASE) == b"acl-scheduler"
        assert active_pull(breakglass, "globex", "Lead") is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    for failure in ("NOPERM", "tick_failed", "enqueue_failed"):
        assert failure not in text, text
    assert breakglass.get(keys.SCHEDULER_LEASE) is None  # released on SIGTERM


def test_scheduler_holds_its_lease_and_claims_due_entries(admin: redis.Redis, scheduler: redis.Redis) -> None:
    ScheduleStore(admin).set("acme", "Lead", 900)
    instance = Scheduler(scheduler, instance_id="acl-test", tick_s=1, lease_ttl_s=5)
    assert instance.hold_lease()
    assert instance.renew_lease()
    (entry,) = instance.due(time.time() + 1)
    assert instance.claim(entry, entry.due + 900)
    assert instance.release()


def test_scheduler_reaches_nothing_else(acl_redis: AclRedis, admin: redis.Redis, scheduler: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    ScheduleStore(admin).set("acme", "Lead", 900)
    for call in (lambda: scheduler.hset(keys.pull_checkpoint("acme", "Lead"), "next_url", "@evil.example/x"),
                 lambda: scheduler.hgetall(keys.pull_checkpoint("acme", "Lead")),
                 lambda: scheduler.hgetall(keys.connection("acme")),
                 lambda: scheduler.hgetall(keys.NOTIFY_CONFIG),
                 lambda: scheduler.hgetall(keys.push_records("acme", "j1")),
                 lambda: scheduler.hset(keys.SCHEDULES, "acme/Lead", "60"),
                 lambda: scheduler.hset(keys.pause("acme"), "reason", "x"),
                 lambda: scheduler.hset(keys.config("acme"), "limit", "1"),
                 lambda: scheduler.get(keys.window_prefix("acme") + "1795996800"),
                 lambda: scheduler.xadd(keys.NOTIFICATIONS, {"kind": "x"}),
                 lambda: scheduler.set(keys.RESUMER_LEASE, "me")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    with pytest.raises(QuotaUnavailable):  # no credits: EVALSHA may not declare the config key
        CreditBucket(scheduler).take("acme", 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        scheduler.eval("return 1", 0)
    refused_quota = crmsync(acl_redis.url("scheduler"), "quota", "set", "acme", "900000")
    assert refused_quota.returncode != 0
    assert CreditBucket(admin).status("acme").used == 0


# -- metrics: reads what its gauges read, nothing else, writes nothing --------------------------------------

def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value of every sample of an exposition, whatever its number format."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_reads_tenant_gauges_and_writes_nothing(acl_redis: AclRedis, admin: redis.Redis,
                                                        worker: redis.Redis, metrics: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    CreditBucket(worker).take("acme", 7)  # loads the metering script, as workers do
    PauseStore(worker).park("acme", ParkedJob("crmsync_pull", {"tenant": "acme", "sobject": "Lead", "job_id": "j1",
                                                               "seq": 1}), "quota_exhausted", "empty")
    worker.hset(keys.org_usage("acme"), mapping={"used": 5, "max": 100_000, "at": 1})
    samples = _samples(scrape(build_registry(metrics, None)))
    acme = (("tenant", "acme"),)
    assert samples[("crmsync_tenant_scrape_success", ())] == 1
    assert samples[("crmsync_tenant_scrape_errors", ())] == 0
    assert samples[("crmsync_quota_used", acme)] == 7
    assert samples[("crmsync_quota_limit", acme)] == 100_000
    assert samples[("crmsync_tenant_paused", (("reason", "quota_exhausted"), ("tenant", "acme")))] == 1
    assert samples[("crmsync_parked_jobs", acme)] == 1
    assert samples[("crmsync_org_api_usage", acme)] == 5
    assert samples[("crmsync_redis_maxmemory_policy_info", (("policy", "noeviction"),))] == 1
    with pytest.raises(QuotaUnavailable):  # the script's INCRBY is refused: nothing written
        CreditBucket(metrics).take("acme", 1)
    assert CreditBucket(admin).status("acme").used == 7


def test_metrics_runs_only_the_metering_read(admin: redis.Redis, worker: redis.Redis, metrics: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")  # admin loads the configure script
    CreditBucket(worker).take("acme", 7)
    window = meter_call("acme", 0, "")[0][1]  # the daily counter a read declares
    read = metrics.execute_command(*METER.command(*meter_call("acme", 0, "")))
    assert read[4] == 7  # used
    with pytest.raises(redis.ResponseError, match="can't run this command"):
        # A take (delta 1) through the same script: its INCRBY is refused inside the script, nothing is written.
        metrics.execute_command(*METER.command(*meter_call("acme", 1, "")))
    with pytest.raises(redis.exceptions.NoPermissionError):  # the script that changes limits, loaded by admin
        metrics.execute_command(*CONFIGURE.command([keys.config("acme"), keys.audit("acme"), window,
                                                    keys.rolling_window("acme"), window],
                                                   ["mallory", "", "10", "0", "limit", "1"]))
    for call in (lambda: metrics.eval("return 1", 0),
                 lambda: metrics.script_load("return redis.call('GET', KEYS[1])"),
                 lambda: metrics.execute_command("EVALSHA", METER.sha, 3, keys.audit("acme"), window,
                                                 keys.rolling_window("acme"), 0, "", "", 0, ""),
                 lambda: metrics.execute_command("FCALL", "f", 0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    assert CreditBucket(admin).status("acme").used == 7
    assert CreditBucket(admin).status("acme").limit == 100_000


def test_metrics_cannot_read_secrets_records_or_connections(admin: redis.Redis, worker: redis.Redis,
                                                           metrics: redis.Redis) -> None:
    admin.hset(keys.NOTIFY_CONFIG, "webhooks", '[{"url": "https://hooks.example.com/T/B/secret-token"}]')
    worker.set(keys.push_records("acme", "j1"), '{"records": [{"Email": "someone@example.com"}]}')
    admin.hset(keys.connection("acme"), "client_id", "x")
    admin.sadd(keys.CONNECTIONS, "acme")
    worker.hset(keys.pull_checkpoint("acme", "Lead"), "next_url", "/services/data/v60.0/query/01g-2000")
    for call in (lambda: metrics.hgetall(keys.NOTIFY_CONFIG), lambda: metrics.get(keys.push_records("acme", "j1")),
                 lambda: metrics.hgetall(keys.connection("acme")), lambda: metrics.smembers(keys.CONNECTIONS),
                 lambda: metrics.hgetall(keys.pull_checkpoint("acme", "Lead")),
                 lambda: metrics.lrange(keys.audit("acme"), 0, -1), lambda: metrics.keys("*"),
                 lambda: metrics.xrange(keys.NOTIFICATIONS), lambda: metrics.scan(0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()


def test_metrics_waits_for_a_worker_to_load_the_metering_script(admin: redis.Redis, worker: redis.Redis,
                                                                 metrics: redis.Redis,
                                                                 breakglass: redis.Redis) -> None:
    CreditBucket(admin).set_limit("acme", 100_000, actor="acl-test")
    breakglass.script_flush()  # as after a restart or a failover
    registry = build_registry(metrics, None)
    before = _samples(scrape(registry))
    assert before[("crmsync_tenant_scrape_success", ())] == 0
    assert ("crmsync_quota_limit", (("tenant", "acme"),)) not in before
    CreditBucket(worker).take("acme", 1)  # what a worker does at start and on its first take
    after = _samples(scrape(registry))
    assert after[("crmsync_tenant_scrape_success", ())] == 1
    assert after[("crmsync_quota_used", (("tenant", "acme"),))] == 1


# -- the default user, and the template -------------------------------------------------------------------

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
    for user in USERS:
        result = render_acl(tmp_path / "users.acl", {u: "pw" for u in USERS if u != user})
        assert result.returncode != 0
        assert f"CRMSYNC_REDIS_{user.upper()}_PASSWORD" in result.stderr
        assert not (tmp_path / "users.acl").exists()


def test_render_acl_takes_a_hash_for_breakglass(tmp_path: Path) -> None:
    digest = "ab" * 32
    passwords = {u: f"{u}-secret" for u in USERS if u != "breakglass"}
    env = {"CRMSYNC_REDIS_BREAKGLASS_PASSWORD_SHA256": digest}
    assert render_acl(tmp_path / "users.acl", passwords, env).returncode == 0
    assert f"user breakglass on #{digest} " in (tmp_path / "users.acl").read_text()
    bad = render_acl(tmp_path / "bad.acl", passwords, {"CRMSYNC_REDIS_BREAKGLASS_PASSWORD_SHA256": "not-a-hash"})
    assert bad.returncode != 0
    assert "64 hex digits" in bad.stderr
    assert not (tmp_path / "bad.acl").exists()


def test_rendered_acl_holds_hashes_only(tmp_path: Path) -> None:
    passwords = {user: f"{user}-secret-{i}" for i, user in enumerate(USERS)}
    assert render_acl(tmp_path / "users.acl", passwords).returncode == 0
    text = (tmp_path / "users.acl").read_text()
    assert not any(pw in text for pw in passwords.values())
    assert "@" not in text.replace("+@", "").replace("-@", "")
    assert (tmp_path / "users.acl").stat().st_mode & 0o077 == 0
    assert all(line.startswith("user ") for line in text.splitlines())
    assert [line.split()[1] for line in text.splitlines()] == ["default", *USERS]
