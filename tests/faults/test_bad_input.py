"""Bad input: refused with a clear error, nothing written, no worker crashed, no credit granted."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from dramatiq import Message

from emulator import EmulatorServer
from quota import CreditBucket, InvalidLimit, InvalidTenant
from quota.errors import InvalidInput
from tests.conftest import wait_until
from tests.faults.conftest import Pool, Tenant, connect_tenant, crmsync, worker_environment
from worker import keys
from worker.broker import NAMESPACE, current
from worker.enqueue import PULL_ACTOR, PUSH_ACTOR, QUEUE, enqueue_pull, enqueue_push, wait_for

BAD_LIMITS = ["99999", "0", "-100000", "100000.0", "1e6", "1_000_000", " 100000", "abc", "", "10000000000000001",
              "\uff11\uff10\uff10\uff10\uff10\uff10"]
BAD_TENANTS = ["", "Acme", "a{b}", "a:b", "-acme", "a" * 65, "acme tenant", "acme\n", "ac*me", "{x}"]
INJECTIONS = ["Lead WHERE Id != null", "Lead; DELETE", "Lead--", "Lead)", "Lead' OR '1'='1", "Id, (SELECT Id FROM X)",
              "Lead\nWHERE", "../Lead", "Lead%20WHERE"]


@pytest.fixture(scope="module")
def pool(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    import subprocess  # noqa: PLC0415

    from tests.faults.conftest import CRMSYNC  # noqa: PLC0415

    base = tmp_path_factory.mktemp("bad-input")
    env = worker_environment(redis_url, base / "data")
    with (base / "worker.log").open("wb") as log:
        process = subprocess.Popen([CRMSYNC, "worker", "--processes", "2", "--threads", "2"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    workers = Pool(process, base / "worker.log", base / "data", 2)
    workers.wait_ready()
    yield workers
    workers.stop()


# Held and let go on other processes' timing (a worker pool of an earlier module may leave its resumer lease to
# expire), never written by a refused command.
_LEASES = {keys.RESUMER_LEASE.encode(), keys.SCHEDULER_LEASE.encode()}


def _snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {k: client.dump(k) for k in client.scan_iter("crmsync:*", count=1000)
            if not k.startswith(b"crmsync:broker:") and k not in _LEASES}


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url}


def test_bad_limits_are_refused_by_cli_and_api(env: dict[str, str], redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _snapshot(client)
    for value in BAD_LIMITS:
        done = crmsync("quota", "set", "bad-limit-tenant", value, env=env)
        assert done.returncode == 2, (value, done.stdout, done.stderr)
        assert "100,000" in done.stderr
        assert "Traceback" not in done.stderr
        with pytest.raises(InvalidLimit):
            CreditBucket(client).set_limit("bad-limit-tenant", value, actor="t")
    for other in (99_999, 100_000.0, True, None, 10**15 + 1, [100_000]):
        with pytest.raises(InvalidLimit):
            CreditBucket(client).set_limit("bad-limit-tenant", other, actor="t")
    assert _snapshot(client) == before


@pytest.mark.parametrize("tenant", ["", "Acme", "a{b}", "a" * 65])
def test_bad_tenant_ids_are_refused_by_every_command(tenant: str, env: dict[str, str], redis_url: str,
                                                     tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _snapshot(client)
    (tmp_path / "r.jsonl").write_text('{"External_Id__c": "x"}\n')
    (tmp_path / "secret").write_text("s")
    commands = [
        ["quota", "set", tenant, "100000"], ["quota", "show", tenant], ["quota", "history", tenant],
        ["sync", tenant, "Lead"], ["push", tenant, "Lead", "--file", str(tmp_path / "r.jsonl"), "--external-id",
                                   "External_Id__c"],
        ["resume", tenant], ["schedule", "set", tenant, "Lead", "--every", "15m"],
        ["schedule", "remove", tenant, "Lead"],
        ["notifications", tenant],
        ["connect", tenant, "--environment", "sandbox", "--login-url", "https://test.salesforce.com", "--client-id",
         "x", "--client-secret-file", str(tmp_path / "secret")],
    ]
    for command in commands:
        done = crmsync(*command, env=env)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert "tenant" in done.stderr, (command, done.stderr)
    for name in BAD_TENANTS:
        with pytest.raises(InvalidTenant):
            enqueue_pull(client, name, "Lead")
        with pytest.raises(InvalidTenant):
            CreditBucket(client).take(name, 1)
    assert _snapshot(client) == before


@pytest.mark.parametrize("name", INJECTIONS[:4])
def test_soql_injection_is_refused_before_anything_is_queued(name: str, env: dict[str, str], redis_url: str,
                                                             tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _snapshot(client)
    queued = client.llen(f"{NAMESPACE}:{QUEUE}")
    (tmp_path / "r.jsonl").write_text('{"External_Id__c": "x"}\n')
    for command in (["sync", "acme", name], ["sync", "acme", "Lead", "--fields", f"Name,{name}"],
                    ["push", "acme", name, "--file", str(tmp_path / "r.jsonl"), "--external-id", "External_Id__c"],
                    ["push", "acme", "Lead", "--file", str(tmp_path / "r.jsonl"), "--external-id", name]):
        done = crmsync(*command, env=env)
        assert done.returncode == 2, (command, done.stderr)
        assert "invalid" in done.stderr
        assert "Traceback" not in done.stderr
    for call in (lambda: enqueue_pull(client, "acme", name), lambda: enqueue_pull(client, "acme", "Lead", [name]),
                 lambda: enqueue_push(client, "acme", name, [{"External_Id__c": "x"}], "External_Id__c"),
                 lambda: enqueue_push(client, "acme", "Lead", [{name: "x", "External_Id__c": "x"}],
                                      "External_Id__c")):
        with pytest.raises(InvalidInput):
            call()
    assert _snapshot(client) == before
    assert client.llen(f"{NAMESPACE}:{QUEUE}") == queued


def test_malformed_messages_never_crash_a_worker_nor_reach_salesforce(
    pool: Pool, emulator: EmulatorServer, redis_url: str, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant: Tenant = connect_tenant(emulator, client, secrets_dir, records=5)
    garbage_args: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((1, 2, 3), {}), ((), {"tenant": None, "sobject": "Lead", "job_id": "x"}),
        ((), {"tenant": tenant.name, "sobject": ["Lead"], "job_id": "x"}),
        ((), {"tenant": tenant.name, "sobject": "Lead", "job_id": "x", "fields": "Id"}),
        ((), {"tenant": tenant.name, "sobject": "Lead", "job_id": "x", "fields": [1, 2]}),
        ((), {"tenant": tenant.name, "sobject": "Lead", "job_id": "x", "seq": -1}),
        ((), {"tenant": tenant.name, "sobject": "Lead", "job_id": "x", "seq": True}),
        ((), {"tenant": tenant.name, "sobject": "Lead", "job_id": "x", "extra": 1}),
        ((), {"tenant": tenant.name, "sobject": "Lead) OR (Id", "job_id": "x"}),
        ((), {"tenant": "x" * 100, "sobject": "Lead", "job_id": "x"}),
    ]
    broker = current()
    sent = [broker.enqueue(Message(queue_name=QUEUE, actor_name=actor, args=args, kwargs=kwargs, options={}))
            for actor in (PULL_ACTOR, PUSH_ACTOR) for args, kwargs in garbage_args]
    sent.append(broker.enqueue(Message(queue_name=QUEUE, actor_name="crmsync_push", args=(),
                                       kwargs={"tenant": tenant.name, "sobject": "Lead", "job_id": "nope",
                                               "external_id": "External_Id__c"}, options={})))
    # A message for an actor nobody declared.
    broker.enqueue(Message(queue_name=QUEUE, actor_name="crmsync_nope", args=(), kwargs={}, options={}))
    dead = {m.message_id for m in sent}

    def dead_ids() -> set[str]:
        # Keyed by the broker's own id: the message id is in the body.
        return {json.loads(v)["message_id"] for v in cast(list[bytes], client.hvals(f"{NAMESPACE}:{QUEUE}.XQ.msgs"))}

    def dead_lettered() -> bool:
        return dead <= dead_ids()

    def missing() -> object:
        got = dead_ids()
        return [(m.actor_name, m.args, m.kwargs) for m in sent if m.message_id not in got]

    wait_until(dead_lettered, 30, "the garbage messages to be dead-lettered", missing)
    job = None
    job_id = enqueue_pull(client, tenant.name, "Lead")
    record = wait_for(client, tenant.name, job_id, timeout=60)
    assert record is not None
    assert (record.state, record.records) == ("done", 5), (record, job)
    assert pool.all_alive(), pool.log_text()[-3000:]
    assert tenant.used() == tenant.counted() == 1


def _tidy(client: redis.Redis, tenant: str) -> None:
    """Remove the garbage from the shared keys (later test modules share this Redis) and the tenant's keys."""
    client.hdel(keys.SCHEDULES, "garbage", f"{tenant}/Lead", "Bad{T}/Lead")
    client.zrem(keys.SCHEDULE_DUE, "garbage")
    client.hdel(keys.NOTIFY_CONFIG, "webhooks", "email")
    client.srem(keys.PAUSED, tenant, "Not A Tenant")
    client.srem(keys.TENANTS, "Not{A}Tenant", tenant)
    client.srem(keys.CONNECTIONS, tenant)
    for key in list(client.scan_iter(f"crmsync:{{{tenant}}}:*")):
        client.delete(key)


def test_garbage_in_every_config_key_is_skipped_and_grants_nothing(
    pool: Pool, emulator: EmulatorServer, secrets_dir: Path, env: dict[str, str], request: pytest.FixtureRequest,
) -> None:
    client = redis.Redis.from_url(env["REDIS_URL"])
    good: Tenant = connect_tenant(emulator, client, secrets_dir, records=5)
    bad: Tenant = connect_tenant(emulator, client, secrets_dir, records=5)
    hand_written: list[Callable[[], object]] = [
        lambda: client.hset(keys.config(bad.name), mapping={"limit": "1e6", "reset_at": "25:99", "reset_from": "x"}),
        lambda: client.hset(keys.connection(bad.name), mapping={"environment": "moon", "login_url": "ftp://x",
                                                                "connection_id": ""}),
        lambda: client.hset(keys.SCHEDULES, mapping={"garbage": "every day", f"{bad.name}/Lead": "-5",
                                                     "Bad{T}/Lead": "60"}),
        lambda: client.zadd(keys.SCHEDULE_DUE, {"garbage": 1}),
        lambda: client.hset(keys.NOTIFY_CONFIG, mapping={"webhooks": "{not json", "email": "[1,2"}),
        lambda: client.hset(keys.pause(bad.name), mapping={"reason": "???", "since": "yesterday"}),
        lambda: client.zadd(keys.parked(bad.name), {"{not json": 1, '{"actor": "crmsync_nope", "kwargs": {}}': 2}),
        lambda: client.sadd(keys.PAUSED, bad.name, "Not A Tenant"),
        lambda: client.hset(keys.pull_checkpoint(bad.name, "Lead"), "state", "{broken"),
        lambda: client.sadd(keys.TENANTS, "Not{A}Tenant"),
        lambda: client.set(keys.org_usage(bad.name), "wrong type"),
        lambda: client.lpush(keys.active_pulls(bad.name), "wrong type"),
    ]
    for write in hand_written:
        write()
    request.addfinalizer(lambda: _tidy(client, bad.name))
    before = {k: v for k, v in _snapshot(client).items() if bad.name.encode() not in k or b":job:" not in k}
    job_id = enqueue_pull(client, good.name, "Lead")
    record = wait_for(client, good.name, job_id, timeout=60)
    assert record is not None
    assert record.state == "done"
    for command in (["status"], ["status", "--json"], ["quota", "show", bad.name], ["schedule", "list"],
                    ["notify", "show"], ["connections"]):
        done = crmsync(*command, env=env)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert done.returncode in (0, 1, 2), command
    assert CreditBucket(client).take(bad.name, 1).granted is False
    assert pool.all_alive(), pool.log_text()[-3000:]
    assert bad.counted() == 0
    after = _snapshot(client)
    changed = [k for k, v in before.items() if after.get(k) != v and bad.name.encode() in k]
    assert changed == [], changed


def test_a_message_that_is_not_json_is_dead_lettered(pool: Pool, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset(f"{NAMESPACE}:{QUEUE}.msgs", "not-json", "\x00{garbage")
    client.rpush(f"{NAMESPACE}:{QUEUE}", "not-json")
    wait_until(lambda: client.hexists(f"{NAMESPACE}:{QUEUE}.XQ.msgs", "not-json"), 15,
               "the message to be dead-lettered")
    assert pool.all_alive()
