"""A stored connection that breaks the secret rules, end to end: real workers that allow only this module's secret
directory and the emulator's address re-check it before using it. The tenant pauses ``auth_failed`` with the
reason, and the emulator sees no request at all, not even at its token endpoint.

Each bad connection holds the org's real client secret (or a login host that reaches the emulator): without the
check the worker would get a token and the pull would go through, so an empty request log proves the check.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import redis

from emulator import EmulatorServer, OrgInfo
from quota import CreditBucket
from tests.e2e.conftest import Workers
from worker import keys
from worker.enqueue import enqueue_pull, wait_for
from worker.jobs.parking import PauseStore
from worker.jobs.state import TERMINAL
from worker.salesforce.connections import ConnectionStore
from worker.settings import SecretSettings

_names = itertools.count(1)
ENV_ORG = "org-env-ref"
PLAIN_VARIABLE = "PLAIN_VARIABLE_HOLDING_A_SECRET"


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run-secrets")


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("elsewhere")


@pytest.fixture(scope="module")
def env_org(emulator: EmulatorServer) -> OrgInfo:
    return emulator.control.add_org(ENV_ORG, records=3)


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str], secret_dir: Path, env_org: OrgInfo) -> dict[str, str]:
    # Production's rules with this module's directory and the emulator's address; and a variable that holds an
    # org's secret under a name secrets may not have (every variable of a worker is readable by it).
    return {**worker_env, "CRMSYNC_SECRET_DIRS": str(secret_dir), "CRMSYNC_LOGIN_HOSTS": "127.0.0.1",
            PLAIN_VARIABLE: env_org.client_secret}


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def connect(client: redis.Redis, emulator: EmulatorServer, secret_dir: Path, org: OrgInfo | None = None) -> str:
    """A tenant connected by the rules (secret in the directory, the emulator's own URL), with credits."""
    name = f"confined{next(_names)}-{os.getpid()}"
    org = org or emulator.control.add_org(f"org-{name}", records=3)
    secret = secret_dir / f"{name}.secret"
    secret.write_text(org.client_secret)
    rules = SecretSettings(secret_dirs=(secret_dir,), login_hosts=(("127.0.0.1", None),))
    ConnectionStore(client, secrets=rules).connect(
        name, environment="production", login_url=emulator.base_url, client_id=org.client_id,
        client_secret_file=str(secret), ca_bundle=emulator.ca_bundle)
    CreditBucket(client).set_limit(name, 100_000, actor="e2e")
    emulator.control.clear_log(org.name)
    return name


def org_of(emulator: EmulatorServer, client: redis.Redis, tenant: str) -> str:
    client_id = client.hget(keys.connection(tenant), "client_id")
    return next(name for name, org in emulator.orgs.items() if org.client_id == client_id)


def test_a_connection_by_the_rules_pulls(workers: Workers, emulator: EmulatorServer, client: redis.Redis,
                                         secret_dir: Path) -> None:
    # The control: the same set-up, unchanged, gets its token and its records.
    tenant = connect(client, emulator, secret_dir)
    record = wait_for(client, tenant, enqueue_pull(client, tenant, "Lead"), timeout=120, until=TERMINAL)
    assert record is not None
    assert (record.state, record.records) == ("done", 3)
    assert emulator.control.request_counts(org_of(emulator, client, tenant))["POST /services/oauth2/token"] == 1


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("client_secret_ref", "file:{outside}/secret", "outside the secret directories"),
    ("client_secret_ref", "file:{secret_dir}/link", "outside the secret directories"),
    ("client_secret_ref", "file:/proc/self/environ", "outside the secret directories"),
    ("login_url", "{localhost}", "localhost is not a Salesforce login host"),
    ("login_url", "https://x.my.salesforce.com@{host}", "must not carry user info"),
], ids=["file-outside", "symlink-out", "proc-environ", "unlisted-host", "userinfo-host"])
def test_a_stored_bad_connection_pauses_the_tenant_unsent(
        *, workers: Workers, emulator: EmulatorServer, client: redis.Redis, secret_dir: Path, outside: Path,
        field: str, value: str, reason: str) -> None:
    tenant = connect(client, emulator, secret_dir)
    org = org_of(emulator, client, tenant)
    (outside / "secret").write_text(emulator.orgs[org].client_secret)
    (secret_dir / "link").unlink(missing_ok=True)
    (secret_dir / "link").symlink_to(outside / "secret")
    host = emulator.base_url.removeprefix("https://")
    # Written by hand, as a connection stored before the rules would be: connect itself refuses every one.
    client.hset(keys.connection(tenant), field, value.format(
        outside=outside, secret_dir=secret_dir, host=host,
        localhost=emulator.base_url.replace("127.0.0.1", "localhost")))
    assert_paused_unsent(emulator, client, tenant, org, reason)


def test_a_stored_variable_not_named_crmsync_secret_is_not_read(
        workers: Workers, emulator: EmulatorServer, client: redis.Redis, secret_dir: Path, env_org: OrgInfo) -> None:
    tenant = connect(client, emulator, secret_dir, org=env_org)
    client.hset(keys.connection(tenant), "client_secret_ref", f"env:{PLAIN_VARIABLE}")
    assert_paused_unsent(emulator, client, tenant, ENV_ORG, "must be named CRMSYNC_SECRET_*")


def assert_paused_unsent(emulator: EmulatorServer, client: redis.Redis, tenant: str, org: str, reason: str) -> None:
    job_id = enqueue_pull(client, tenant, "Lead")
    record = wait_for(client, tenant, job_id, timeout=120, until=TERMINAL | {"parked"})
    assert record is not None
    assert record.state == "parked", record
    pause = PauseStore(client).get(tenant)
    assert pause is not None
    assert pause.reason == "auth_failed"
    assert reason in pause.detail, pause.detail
    assert emulator.orgs[org].client_secret not in pause.detail
    assert emulator.control.request_counts(org) == {}  # no token request, no API call
    assert CreditBucket(client).status(tenant).used == 0
