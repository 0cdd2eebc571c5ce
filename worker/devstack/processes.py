"""The processes ``crmsync run`` starts and stops: each in its own session, each logging to a file.

Children get their own process group, so a Ctrl-C in the terminal reaches only ``crmsync run``, which then
stops them in order (scheduler, workers, metrics, emulator) and waits for each: nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from worker.devstack.redis_server import die_with_parent
from worker.errors import StartFailed

__all__ = ["ProcessStack", "stop_group"]

_STOP_TIMEOUT_S = 20.0



@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class ProcessStack:
    """Starts ``crmsync`` subcommands as children and stops them all, in reverse order."""

    env: dict[str, str]
    log_dir: Path
    children: list[_Child] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``crmsync ARGS`` as child ``name``, its output going to ``log_dir/NAME.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *args], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (children start before `crmsync run` has threads)
        )
        self.children.append(_Child(name, process, log))
        return process

    def wait_for_file(self, name: str, path: Path, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until child ``name`` writes the JSON file ``path``; return its content."""
        def read() -> Any:
            return json.loads(path.read_text()) if path.exists() else None

        content: dict[str, Any] = self._wait(name, timeout, read)
        return content

    def wait_for_line(self, name: str, marker: str, timeout: float = 60.0) -> str:
        """Wait until child ``name`` logs a line containing ``marker``; return that line."""

        def found() -> str | None:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
            return next((line for line in text.splitlines() if marker in line), None)

        line: str = self._wait(name, timeout, found)
        return line

    def _wait(self, name: str, timeout: float, probe: Callable[[], Any]) -> Any:
        child = next(c for c in self.children if c.name == name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = probe()
            except ValueError:  # a file caught half-written
                value = None
            if value is not None:
                return value
            if child.process.poll() is not None:
                raise StartFailed(f"{name} exited with {child.process.returncode}: see {self.log_dir / name}.log")
            time.sleep(0.1)  # polling a child process that is starting up
        raise StartFailed(f"{name} did not become ready in {timeout:.0f}s: see {self.log_dir / name}.log")

    def dead(self) -> list[str]:
        """Names of children that have exited."""
        return [c.name for c in self.children if c.process.poll() is not None]

    def stop(self) -> None:
        """Stop every child and its process group, newest first."""
        for child in reversed(self.children):
            stop_group(child.process)
            child.log.close()
        self.children.clear()


def stop_group(process: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT_S) -> None:
    """SIGTERM a child started in its own session, SIGKILL it if it has not exited after ``timeout``, then
    make sure nothing of its process group (Dramatiq's worker processes, say) outlives it."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
