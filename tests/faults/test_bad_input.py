"""Bad input: refused with a clear error, nothing written, no worker crashed, no credit granted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, cast

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
from worker.errors import InvalidRecords, InvalidTimeout
from worker.jobs.push import MAX_PUSH_BYTES, MAX_RECORD_BYTES

BAD_LIMITS = ["99999", "0", "-100000", "100000.0", "1e6", "1_000_000", " 100000", "abc", "", "10000000000000001",
              "\uff11\uff10\uff10\uff10\uff10\uff10"]
BAD_TENANTS = ["", "Acme", "a{b}", "a:b", "-acme", "a" * 65, "acme tenant", "acme\n", "ac*me", "{x}"]
INJECTIONS = ["Lead WHERE Id != null", "Lead; DELETE", "Lead--", "Lead)", "Lead' OR '1'='1", "Id, (SELECT Id FROM X)",
              "Lead\nWHERE", "../Lead", "Lead%20WHERE"]


@pytest.fixture(scope="module")
def pool(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    from tests.faults.conftest import CRMSYNC  # noqa: PLC0415

    base = tmp_path_factory.mktemp("bad-input")
    # The tests' allowances (their secret directories, the emulator's address), which worker_environment drops.
    allowed = {k: os.environ[k] for k in ("CRMSYNC_SECRET_DIRS", "CRMSYNC_LOGIN_HOSTS") if k in os.environ}
    env = worker_environment(redis_url, base / "data", **allowed)
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


def _refused(done: subprocess.CompletedProcess[str], exit_code: int = 2) -> str:
    """The one line a refused command printed, checked: its exit code, one stderr line, no traceback."""
    assert done.returncode == exit_code, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("crmsync: error: "), done.stderr[-2000:]
    assert done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert done.stdout == ""
    return done.stderr


_GOOD = b'{"External_Id__c": "ok-1", "LastName": "Good"}\n'
_BIG = "x" * (MAX_RECORD_BYTES - 1_000)  # one record just under the cap
_OVER = MAX_PUSH_BYTES // MAX_RECORD_BYTES + 1  # records of _BIG that pass the push's cap


class BadFile(NamedTuple):
    what: str
    content: Callable[[], bytes]  # built when the test runs: some are tens of MB
    line: int  # the line that is wrong
    says: str  # a word the error must say


BAD_FILES = [
    BadFile("not utf-8", lambda: _GOOD + b"\n" + b'{"External_Id__c": "x", "LastName": "M\xfcller"}\n', 3, "UTF-8"),
    BadFile("latin-1 file", lambda: b'{"External_Id__c": "x", "LastName": "M\xfcller"}\n', 1, "UTF-8"),
    BadFile("nested array", lambda: _GOOD + b"[" * 100_000 + b"]" * 100_000 + b"\n", 2, "nested"),
    BadFile("nested object", lambda: _GOOD * 2 + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n", 3, "nested"),
    BadFile("NaN", lambda: _GOOD + b'{"External_Id__c": "x", "AnnualRevenue": NaN}\n', 2, "NaN"),
    BadFile("Infinity", lambda: b'{"External_Id__c": "x", "AnnualRevenue": Infinity}\n', 1, "Infinity"),
    BadFile("-Infinity", lambda: b'{"External_Id__c": "x", "AnnualRevenue": -Infinity}\n', 1, "Infinity"),
    BadFile("overflowing float", lambda: b'{"External_Id__c": "x", "AnnualRevenue": 1e400}\n', 1, "finite"),
    BadFile("5,000 digits", lambda: b'{"External_Id__c": "x", "AnnualRevenue": ' + b"9" * 5_000 + b"}\n", 1,
            "digits"),
    BadFile("attributes", lambda: b'{"External_Id__c": "x", "attributes": {"type": "Account"}}\n', 1, "attributes"),
    BadFile("attributes, any case", lambda: b'{"External_Id__c": "x", "Attributes": "Account"}\n', 1,
            "attributes"),
    BadFile("one field twice", lambda: b'{"External_Id__c": "x", "Email": "a@x.io", "Email": "b@x.io"}\n', 1,
            "twice"),
    BadFile("one field in two cases", lambda: b'{"External_Id__c": "x", "Email": "a@x.io", "EMAIL": "b@x.io"}\n',
            1, "same field"),
    BadFile("nested value", lambda: b'{"External_Id__c": "x", "Address": {"City": "Paris"}}\n', 1, "scalar"),
    BadFile("not an object", lambda: _GOOD + b'["External_Id__c", "x"]\n', 2, "JSON object"),
    BadFile("not JSON", lambda: _GOOD * 3 + b'{"External_Id__c": }\n', 4, "not valid JSON"),
    BadFile("bad field name", lambda: b'{"External_Id__c": "x", "Last Name": "y"}\n', 1, "invalid field name"),
    BadFile("no external id", lambda: _GOOD + b'{"LastName": "y"}\n', 2, "external id"),
    BadFile("a 50 MB record",
            lambda: _GOOD + b'{"External_Id__c": "x", "Description": "' + b"x" * 50_000_000 + b'"}\n', 2,
            f"{MAX_RECORD_BYTES:,}"),
    BadFile("a push over its cap", lambda: b"".join(
        json.dumps({"External_Id__c": str(n), "Description": _BIG}).encode() + b"\n" for n in range(_OVER)),
        _OVER, f"{MAX_PUSH_BYTES:,}"),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[case.what for case in BAD_FILES])
def test_a_bad_push_file_exits_2_naming_its_line_and_writes_nothing(case: BadFile, env: dict[str, str],
                                                                    redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _snapshot(client)
    path = tmp_path / "records.jsonl"
    path.write_bytes(case.content())
    error = _refused(crmsync("push", "acme", "Lead", "--file", str(path), "--external-id", "External_Id__c",
                             env=env))
    assert f"{path}:{case.line}: " in error, error[:500]
    assert case.says in error, error[:500]
    assert len(error) < 500
    assert _snapshot(client) == before


def test_a_good_push_file_with_a_bom_crlf_and_blank_lines_is_queued(env: dict[str, str], redis_url: str,
                                                                    tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    path = tmp_path / "records.jsonl"
    # U+2028 inside a string is not a line end in JSON Lines; NaN inside a string is text.
    path.write_bytes(b"\xef\xbb\xbf" + _GOOD.replace(b"\n", b"\r\n") + b"\n  \n"
                     + '{"External_Id__c": "ok-2", "LastName": "a\u2028b", "Title": "NaN"}\n'.encode())
    tenant = "bom-tenant"
    done = crmsync("push", tenant, "LEAD", "--file", str(path), "--external-id", "External_Id__c", env=env)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    try:
        stored = json.loads(cast(str, client.hget(keys.push_records(tenant, job_id), "records")))
        assert [r["External_Id__c"] for r in stored] == ["ok-1", "ok-2"]
        assert stored[1]["LastName"] == "a\u2028b"
        assert client.hget(keys.job(tenant, job_id), "object") == "Lead"  # matched to Salesforce's case
    finally:
        _forget(client, tenant)


def _forget(client: redis.Redis, tenant: str) -> None:
    """Remove a tenant's keys and its queued messages, so the module's worker pool never runs them."""
    for key in list(client.scan_iter(f"crmsync:{{{tenant}}}:*")):
        client.delete(key)
    for message_id, raw in cast(dict[Any, Any], client.hgetall(f"{NAMESPACE}:{QUEUE}.msgs")).items():
        if tenant in str(raw):
            client.hdel(f"{NAMESPACE}:{QUEUE}.msgs", message_id)
            client.lrem(f"{NAMESPACE}:{QUEUE}", 0, message_id)


BAD_RECORDS: list[tuple[str, Callable[[], Any]]] = [
    ("NaN", lambda: [{"External_Id__c": "x", "AnnualRevenue": float("nan")}]),
    ("Infinity", lambda: [{"External_Id__c": "a"}, {"External_Id__c": "x", "AnnualRevenue": float("inf")}]),
    ("attributes", lambda: [{"External_Id__c": "x", "attributes": {"type": "Account"}}]),
    ("attributes as text", lambda: [{"External_Id__c": "x", "attributes": "Account"}]),
    ("one field in two cases", lambda: [{"External_Id__c": "x", "Email": "a@x.io", "email": "b@x.io"}]),
    ("a datetime", lambda: [{"External_Id__c": "x", "CreatedDate": datetime(2024, 1, 1, tzinfo=UTC)}]),
    ("a Decimal", lambda: [{"External_Id__c": "x", "AnnualRevenue": Decimal("1.5")}]),
    ("a non-text field name", lambda: [{"External_Id__c": "x", 5: "y"}]),
    ("a 50 MB record", lambda: [{"External_Id__c": "x", "Description": "x" * 50_000_000}]),
    ("a push over its cap",
     lambda: [{"External_Id__c": str(n), "Description": _BIG} for n in range(_OVER)]),
    ("no records", lambda: []),
    ("not a list", lambda: {"External_Id__c": "x"}),
]


@pytest.mark.parametrize(("what", "records"), BAD_RECORDS, ids=[case[0] for case in BAD_RECORDS])
def test_the_python_api_refuses_the_same_records_and_writes_nothing(what: str, records: Callable[[], Any],
                                                                    redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _snapshot(client)
    with pytest.raises(InvalidRecords) as refused:
        enqueue_push(client, "acme", "Lead", records(), "External_Id__c")
    assert "\n" not in str(refused.value)
    assert len(str(refused.value)) < 500
    assert _snapshot(client) == before


@pytest.mark.parametrize("timeout", ["nan", "NaN", "inf", "-inf", "-1", "abc", "", "604801", "1e308"])
def test_a_bad_timeout_exits_2_before_anything_is_queued(timeout: str, env: dict[str, str], redis_url: str,
                                                         tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _snapshot(client)
    queued = client.llen(f"{NAMESPACE}:{QUEUE}")
    path = tmp_path / "records.jsonl"
    path.write_bytes(_GOOD)
    for command in (["sync", "acme", "Lead"],
                    ["push", "acme", "Lead", "--file", str(path), "--external-id", "External_Id__c"]):
        error = _refused(crmsync(*command, "--wait", f"--timeout={timeout}", env=env))
        assert "--timeout" in error
    with pytest.raises(InvalidTimeout):
        wait_for(client, "acme", "nope", timeout=float(timeout) if timeout not in ("abc", "") else -1)
    assert _snapshot(client) == before
    assert client.llen(f"{NAMESPACE}:{QUEUE}") == queued


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sync_and_push_with_redis_down_exit_1_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(_GOOD)
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
    for command in (["sync", "acme", "Lead"], ["sync", "acme", "Lead", "--wait"],
                    ["push", "acme", "Lead", "--file", str(path), "--external-id", "External_Id__c"]):
        error = _refused(crmsync(*command, env=env), exit_code=1)
        assert "Redis unavailable" in error
        assert "REDIS_URL" in error


def test_lead_and_lead_in_capitals_share_one_checkpoint_and_one_pull(
    pool: Pool, emulator: EmulatorServer, redis_url: str, secrets_dir: Path, env: dict[str, str],
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant: Tenant = connect_tenant(emulator, client, secrets_dir, records=5)
    first = json.loads(_ok(crmsync("sync", tenant.name, "LEAD", "--wait", "--json", env=env)))
    assert (first["state"], first["object"], first["records"]) == ("done", "Lead", 5)
    again = json.loads(_ok(crmsync("sync", tenant.name, "lead", "--wait", "--json", env=env)))
    # The same checkpoint: the second pull reads on from the first's watermark, and finds nothing new.
    assert (again["state"], again["object"], again["records"]) == ("done", "Lead", 0)
    assert sorted(client.scan_iter(f"crmsync:{{{tenant.name}}}:pull:*")) == [
        keys.pull_checkpoint(tenant.name, "Lead").encode()]
    assert keys.lock(tenant.name, "LEAD") == keys.lock(tenant.name, "Lead")
    assert tenant.used() == tenant.counted() == 2


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


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
