"""deploy/rabbitmq on a real RabbitMQ: the node the scale-out variants run, with the repository's rabbitmq.conf
and the definitions rendered by render-definitions.sh from a password (the compose service's and the Kubernetes
pod's start), on free loopback ports (worker/devstack/rabbitmq_server.py's launcher). Skipped, saying why,
where rabbitmq-server cannot be had.

Checked: the crmsync user exists with its own vhost and no tag, and nothing else (no guest); a wrong password,
the guest user and another vhost are refused; Dramatiq's broker declares its queues and sends a message there as
crmsync; the rendered file holds only the salted hash RabbitMQ checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pytest

from tests.deploy.conftest import DEPLOY
from worker.broker.rabbitmq import CrmsyncRabbitmqBroker
from worker.devstack.rabbitmq_server import LocalRabbitMQ, find_rabbitmq_server

RABBITMQ = DEPLOY / "rabbitmq"
RENDER = RABBITMQ / "render-definitions.sh"
VHOST = "crmsync"


def render(output: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(RENDER), str(RABBITMQ / "definitions.json"), str(output)],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=30,
                          check=False)


class DeployRabbitMQ(LocalRabbitMQ):
    """The launcher's node, configured by deploy/rabbitmq instead of the launcher's own user."""

    def url_for(self, user: str, password: str, port: int | None = None) -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{port or self.port}/{VHOST}"

    def _write_files(self) -> None:
        super()._write_files()
        base = self.directory
        rendered = render(base / "definitions.json", {"CRMSYNC_RABBITMQ_PASSWORD": self.password})
        assert rendered.returncode == 0, rendered.stderr
        conf = (RABBITMQ / "rabbitmq.conf").read_text()
        conf, count = re.subn(r"^load_definitions = /tmp/crmsync-definitions\.json$",
                              f"load_definitions = {base / 'definitions.json'}", conf, flags=re.MULTILINE)
        assert count == 1
        # The launcher's ports (environment) and log file instead of 5672 and the console.
        conf = re.sub(r"^(listeners\.tcp\.default|log\.console(\.level)?) = .*$", "", conf, flags=re.MULTILINE)
        (base / "rabbitmq.conf").write_text(conf + "log.console = false\nlog.file.level = info\n")


@pytest.fixture(scope="module")
def node() -> Iterator[DeployRabbitMQ]:
    try:
        script = find_rabbitmq_server()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with DeployRabbitMQ(script) as server:
        yield server


def ctl(server: DeployRabbitMQ, *args: str) -> list[list[str]]:
    """rabbitmqctl's rows (tab-separated, no header), through the Erlang cookie as ops would."""
    binary = Path(server.script).with_name("rabbitmqctl")
    command = str(binary) if binary.is_file() else (shutil.which("rabbitmqctl") or "rabbitmqctl")
    done = subprocess.run([command, "-n", server.node, "-q", "--no-table-headers", *args], env=server.environ(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]


def login(server: DeployRabbitMQ, user: str, password: str, vhost: str = VHOST) -> None:
    url = f"amqp://{user}:{password}@127.0.0.1:{server.port}/{vhost.replace('/', '%2F')}?connection_attempts=1"
    pika.BlockingConnection(pika.URLParameters(url)).close()


def test_only_the_crmsync_user_on_its_own_vhost(node: DeployRabbitMQ) -> None:
    assert ctl(node, "list_users") == [["crmsync", "[]"]]  # no guest, no administrator tag
    assert [row[0] for row in ctl(node, "list_vhosts")] == [VHOST]
    assert ctl(node, "list_permissions", "-p", VHOST) == [["crmsync", ".*", ".*", ".*"]]


def test_wrong_logins_are_refused(node: DeployRabbitMQ) -> None:
    login(node, "crmsync", node.password)
    for user, password in (("crmsync", "wrong"), ("guest", "guest")):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            login(node, user, password)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        login(node, "crmsync", node.password, vhost="/")


def test_dramatiq_queues_a_message_as_crmsync(node: DeployRabbitMQ) -> None:
    broker = CrmsyncRabbitmqBroker(url=node.url)
    try:
        broker.declare_queue("crmsync")
        message: dramatiq.Message[Any] = dramatiq.Message(queue_name="crmsync", actor_name="crmsync_pull", args=(),
                                                          kwargs={"tenant": "acme"}, options={})
        broker.enqueue(message)
    finally:
        broker.close()
    queues = {row[0]: int(row[1]) for row in ctl(node, "list_queues", "-p", VHOST, "name", "messages")}
    assert queues["crmsync"] == 1
    assert {"crmsync.DQ", "crmsync.XQ"} <= set(queues)  # the delay and dead-letter queues Dramatiq declares


def test_the_rendered_definitions_hold_only_the_salted_hash(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-Password")
    assert render(tmp_path / "out.json", {"CRMSYNC_RABBITMQ_PASSWORD_FILE": str(password_file)}).returncode == 0
    text = (tmp_path / "out.json").read_text()
    assert "s3cret-Password" not in text
    assert (tmp_path / "out.json").stat().st_mode & 0o077 == 0
    (user,) = json.loads(text)["users"]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    raw = base64.b64decode(user["password_hash"])
    salt, digest = raw[:4], raw[4:]
    assert digest == hashlib.sha256(salt + b"s3cret-Password").digest()
    missing = render(tmp_path / "none.json", {})
    assert missing.returncode != 0
    assert "CRMSYNC_RABBITMQ_PASSWORD" in missing.stderr
    assert not (tmp_path / "none.json").exists()
