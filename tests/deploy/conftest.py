"""Fixtures for the deploy/ checks: a real redis-server loading the repository's ACL file.

The ACL file is rendered from ``deploy/redis/users.acl`` by ``deploy/redis/render-acl.sh`` (the same script the
compose and Kubernetes Redis run at start), with throwaway passwords, into a temporary directory.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from worker.devstack.redis_server import EmbeddedRedis, find_server_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ACL_TEMPLATE = DEPLOY / "redis" / "users.acl"
RENDER_ACL = DEPLOY / "redis" / "render-acl.sh"
USERS = ("breakglass", "admin", "worker", "scheduler", "metrics")


@dataclass(frozen=True)
class AclRedis:
    """A running redis-server with the repository's ACL users."""

    port: int
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str, **options: object) -> redis.Redis:
        return redis.Redis.from_url(self.url(user), **options)


def render_acl(output: Path, passwords: dict[str, str], extra_env: dict[str, str] | None = None,
               template: Path = ACL_TEMPLATE) -> subprocess.CompletedProcess[str]:
    """Run render-acl.sh on ``template`` with ``passwords`` (user -> password) and ``extra_env`` as its only
    environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(extra_env or {})}
    env.update({f"CRMSYNC_REDIS_{user.upper()}_PASSWORD": pw for user, pw in passwords.items()})
    return subprocess.run(["sh", str(RENDER_ACL), str(template), str(output)], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def _server_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    return tuple(int(g) for g in found.groups()) if found else (0,)


def new_passwords() -> dict[str, str]:
    """A throwaway password for every user of the ACL file."""
    return {user: secrets.token_hex(16) for user in USERS}


@pytest.fixture(scope="session")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    binary = acl_binary()
    workdir = tmp_path_factory.mktemp("acl-redis")
    passwords = new_passwords()
    with acl_server(binary, workdir, passwords) as server:
        yield AclRedis(server.port, passwords)


def acl_server(binary: str, workdir: Path, passwords: dict[str, str],
               config: dict[str, str] | None = None, template: Path = ACL_TEMPLATE) -> EmbeddedRedis:
    """A redis-server (not started) in ``workdir`` loading the ACL file rendered from ``template`` with
    ``passwords``, plus ``config``."""
    workdir.mkdir(parents=True, exist_ok=True)
    acl_file = workdir / "users.acl"
    rendered = render_acl(acl_file, passwords, template=template)
    assert rendered.returncode == 0, rendered.stderr

    def probe(port: int) -> redis.Redis:
        # The default user is off: readiness can only be asked as a user of the ACL file.
        return AclRedis(port, passwords).client("breakglass", socket_connect_timeout=0.5, socket_timeout=2)

    return EmbeddedRedis(binary, directory=workdir, config={"aclfile": str(acl_file), **(config or {})},
                         client=probe)


def acl_binary() -> str:
    """The redis-server binary for ACL tests; skips the test when it cannot load our ACL file."""
    binary = find_server_binary()
    if _server_version(binary) < (7, 0):
        pytest.skip(f"{binary} is older than Redis 7: read-only key patterns (%R~) need Redis 7")
    if shutil.which("sha256sum") is None:
        pytest.skip("render-acl.sh needs sha256sum (coreutils)")
    return binary
