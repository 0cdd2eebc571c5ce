"""A Redis with the repository's ACL users keeps, across a restart or a crash, what crmsync's Lua scripts wrote.

Redis replays its append-only file as the `default` user and checks each transaction's commands against that
user's rules at EXEC; a script's writes are logged as one transaction. With `default` denied every command
(`-@all`), a restart silently dropped every script's writes since the last AOF rewrite: limits set, credits
taken (spent credits handed out again), pauses and parked jobs (redis/redis#14545, valkey-io/valkey#3984; Redis
7.2 has the bug). deploy/redis/users.acl keeps `default` off and passwordless (no one can log in as it) with
every command, and this test restarts a real Redis with that file; the same test with the old rule shows the loss.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quota import CreditBucket
from tests.deploy.conftest import ACL_TEMPLATE, AclRedis, acl_binary, acl_server, new_passwords
from worker.devstack.redis_server import EmbeddedRedis
from worker.jobs.parking import ParkedJob, PauseStore

OLD_DEFAULT = "user default off resetpass resetkeys resetchannels -@all"
# As deploy/redis/redis.conf, but a crash must not lose the last second: only the replay is under test here.
AOF = {"appendonly": "yes", "appendfsync": "always", "aof-use-rdb-preamble": "yes"}


def _write_state(acl: AclRedis) -> None:
    """What crmsync writes through its scripts: a limit (admin), a take and a parked job (worker)."""
    admin, worker = acl.client("admin"), acl.client("worker")
    try:
        CreditBucket(admin).set_limit("acme", 100_000, actor="restart-test")
        assert CreditBucket(worker).take("acme", 5).granted
        job = ParkedJob("crmsync_pull", {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "seq": 1})
        assert PauseStore(worker).park("acme", job, "quota_exhausted", "bucket empty")
    finally:
        admin.close()
        worker.close()


def _state(acl: AclRedis) -> tuple[int | None, int, int]:
    """(limit, credits used, parked jobs) as the admin reads them."""
    admin = acl.client("admin")
    try:
        status = CreditBucket(admin).status("acme")
        return status.limit, status.used, PauseStore(admin).parked_count("acme")
    finally:
        admin.close()


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedRedis, AclRedis]]:
    """A Redis with AOF and the ACL file; ``request.param`` replaces the template's default-user rule."""
    template = ACL_TEMPLATE.read_text()
    if getattr(request, "param", None):
        template, count = re.subn(r"^user default .*$", request.param, template, flags=re.MULTILINE)
        assert count == 1
    (tmp_path / "users.acl.template").write_text(template)
    passwords = new_passwords()
    launcher = acl_server(acl_binary(), tmp_path / "data", passwords, AOF, template=tmp_path / "users.acl.template")
    with launcher as running:
        yield running, AclRedis(running.port, passwords)


@pytest.mark.parametrize("restart", ["stop", "kill"])
def test_script_writes_survive_a_restart_and_a_crash(server: tuple[EmbeddedRedis, AclRedis], restart: str) -> None:
    process, acl = server
    _write_state(acl)
    assert _state(acl) == (100_000, 5, 1)
    if restart == "stop":
        process.stop()  # SIGTERM: the AOF is flushed and closed
    else:
        process.kill()  # SIGKILL, as a crash (appendfsync always: nothing unsynced)
    process.start()
    assert _state(acl) == (100_000, 5, 1)
    assert "CRITICAL" not in (process.directory / "redis.log").read_text()


def test_nobody_can_act_as_the_default_user(server: tuple[EmbeddedRedis, AclRedis]) -> None:
    _process, acl = server
    anonymous = redis.Redis(port=acl.port, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("crmsync:tenants")
    anonymous.close()
    for password in ("", "nopass", "default"):
        with pytest.raises(redis.RedisError):
            redis.Redis(port=acl.port, username="default", password=password, socket_timeout=5).ping()


@pytest.mark.parametrize("server", [OLD_DEFAULT], indirect=True)
def test_the_old_default_rule_lost_script_writes_at_a_restart(server: tuple[EmbeddedRedis, AclRedis]) -> None:
    # Why the rule changed (and that the test above can fail): Redis refuses the replayed transactions.
    process, acl = server
    _write_state(acl)
    process.stop()
    process.start()
    assert _state(acl) != (100_000, 5, 1)
    assert "ACLs rules changed" in (process.directory / "redis.log").read_text()
