"""A real RabbitMQ server on loopback, started and stopped by its owner: the tests' and the benchmarks' broker.

It runs Debian's ``rabbitmq-server`` (the script in ``/usr/lib/rabbitmq/bin``, which any user may run; the
``/usr/sbin`` wrapper would switch to the ``rabbitmq`` user) or whatever ``rabbitmq-server`` is on PATH, with
everything of its own in a temporary directory: the node's data and logs, a config file with a user and a
random password, an empty plugin list (no management plugin), and ``HOME`` (so Erlang's cookie is ours). Its
ports are free loopback ports picked at start: AMQP, Erlang distribution and a private ``epmd``, so it never
meets the machine's own RabbitMQ on 5672 or its epmd on 4369. The node is named ``crmsync-test-PORT@localhost``.

Readiness is an AMQP connection with the server's own credentials, so a server that already held the port (and
knows no such user) is never taken for ours.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pika
import pika.exceptions

from worker.devstack.redis_server import die_with_parent, free_loopback_port
from worker.errors import StartFailed

__all__ = ["LocalRabbitMQ", "RabbitMQStartError", "find_rabbitmq_server"]

_DEBIAN_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
_READY_TIMEOUT_S = 90.0  # an Erlang node boots in 3-10 s; a loaded 2-core machine can take far longer
_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.25
_START_ATTEMPTS = 3
_LOG_TAIL_CHARS = 1500
USER = "crmsync"


def find_rabbitmq_server() -> str:
    """The path of a ``rabbitmq-server`` start script this user can run, or raise ``RuntimeError`` saying why
    there is none (the tests skip with that reason)."""
    if _DEBIAN_SCRIPT.is_file() and os.access(_DEBIAN_SCRIPT, os.X_OK):
        return str(_DEBIAN_SCRIPT)
    on_path = shutil.which("rabbitmq-server")
    if on_path and not on_path.startswith(("/usr/sbin/", "/sbin/")):  # Debian's wrapper: `su rabbitmq`
        return on_path
    raise RuntimeError("no rabbitmq-server found: install Debian's rabbitmq-server package "
                       "(apt-get install rabbitmq-server) or put RabbitMQ's rabbitmq-server script on PATH")


class RabbitMQStartError(StartFailed):
    """rabbitmq-server exited, or did not accept our AMQP login in time; the message has its log's tail."""


class LocalRabbitMQ:
    """A RabbitMQ node on 127.0.0.1 in a temporary directory, removed by ``stop()``.

    ``url`` is ``amqp://crmsync:PASSWORD@127.0.0.1:PORT/%2F`` (the password is random per server). Options:
    ``config`` adds lines to ``rabbitmq.conf`` (such as ``consumer_timeout = 60000``).
    """

    def __init__(self, script: str | None = None, *, config: dict[str, str] | None = None,
                 ready_timeout: float = _READY_TIMEOUT_S) -> None:
        self.script = script or find_rabbitmq_server()
        self.config = dict(config or {})
        self.ready_timeout = ready_timeout
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.dist_port = 0
        self.epmd_port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        """The Erlang node name, for ``rabbitmqctl -n`` (with ``environ()``'s ``HOME`` and ``ERL_EPMD_PORT``)."""
        return f"crmsync-test-{self.port}@localhost"

    @property
    def url(self) -> str:
        """The AMQP URL of the running server, with its user and password."""
        self._running()
        return self.url_for(USER, self.password)

    def url_for(self, user: str, password: str, port: int | None = None) -> str:
        """An AMQP URL of this server (or of ``port``) with other credentials: for tests of wrong ones."""
        return f"amqp://{user}:{password}@127.0.0.1:{port or self.port}/%2F"

    @property
    def directory(self) -> Path:
        """Where the node keeps its data, logs and config."""
        if self._tmp is None:
            raise RuntimeError("rabbitmq-server has no directory before it starts")
        return Path(self._tmp.name)

    @property
    def running(self) -> bool:
        """Whether the server process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the node and wait until it accepts an AMQP login; return its URL. Raises ``RabbitMQStartError``
        (with the log's tail) when it exits or is not ready within ``ready_timeout``."""
        if self._proc is not None:
            raise RuntimeError("rabbitmq-server is already running")
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._tmp = tempfile.TemporaryDirectory(prefix="crmsync-rabbitmq-")
            self.port, self.dist_port, self.epmd_port = (free_loopback_port() for _ in range(3))
            try:
                self._launch()
                self._wait_ready()
            except RabbitMQStartError as error:
                # Another process may take a free port before the node binds it: try new ports.
                taken = "eaddrinuse" in str(error)
                self.stop()
                if not taken or attempt == _START_ATTEMPTS:
                    raise
            else:
                return self.url
        raise AssertionError("unreachable")  # the loop returns or raises

    def environ(self) -> dict[str, str]:
        """The environment the node runs in, which ``rabbitmqctl`` / ``rabbitmq-diagnostics`` need as well."""
        base = self.directory
        return {
            **os.environ,
            "HOME": str(base),  # Erlang's cookie: ~/.erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of what the node wrote: its console output, then its log file."""
        if self._tmp is None:
            return ""
        parts = [path.read_text(errors="replace")[-chars:] for path in
                 (self.directory / "console.log", *sorted((self.directory / "log").glob("*.log")))
                 if path.is_file()]
        return "\n".join(part.strip() for part in parts if part.strip())[-chars:]

    def close_connections(self) -> None:
        """Have the node close every client connection, as a restart or a network cut would (``rabbitmqctl
        close_all_connections``); unacknowledged deliveries go back to their queues."""
        ctl = Path(self.script).with_name("rabbitmqctl")
        subprocess.run([str(ctl) if ctl.exists() else "rabbitmqctl", "-q", "-n", self.node, "close_all_connections",
                        "closed by the test"], env=self.environ(), check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Stop the node (SIGTERM, which the start script turns into a clean shutdown; SIGKILL to its whole
        process group if it lingers), stop its epmd, and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            self._stop_epmd()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRabbitMQ:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _write_files(self) -> None:
        base = self.directory
        (base / "mnesia").mkdir()
        (base / "log").mkdir()
        cookie = base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)  # Erlang refuses a cookie others may read
        (base / "enabled_plugins").write_text("[].\n")  # no management plugin: one port fewer, a faster boot
        (base / "advanced.config").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        lines = {"default_user": USER, "default_pass": self.password, "default_vhost": "/",
                 "log.console": "false", "log.file.level": "info", **self.config}
        (base / "rabbitmq.conf").write_text("".join(f"{name} = {value}\n" for name, value in lines.items()))

    def _launch(self) -> None:
        self._write_files()
        with (self.directory / "console.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [self.script], env=self.environ(), cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,  # its own group: stop() can kill the VM the script started
                preexec_fn=die_with_parent,  # noqa: PLW1509 (one prctl call, its symbol resolved before the fork)
            )

    def _wait_ready(self) -> None:
        proc = self._running()
        deadline = time.monotonic() + self.ready_timeout
        parameters = pika.URLParameters(self.url_for(USER, self.password) + "?connection_attempts=1"
                                        "&socket_timeout=2&blocked_connection_timeout=2")
        while True:
            try:
                pika.BlockingConnection(parameters).close()
            except pika.exceptions.AMQPError:
                pass
            else:
                return
            if proc.poll() is not None:
                raise RabbitMQStartError(f"rabbitmq-server exited with {proc.returncode}: {self.log_tail()}")
            if time.monotonic() >= deadline:
                raise RabbitMQStartError(
                    f"rabbitmq-server was not ready within {self.ready_timeout:.0f}s: {self.log_tail()}")
            time.sleep(_POLL_S)

    def _stop_epmd(self) -> None:
        # The node's epmd daemonized itself out of the process group; it serves only this port.
        epmd = shutil.which("epmd")
        if epmd and self.epmd_port:
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.environ(), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("rabbitmq-server is not running")
        return self._proc
