"""Log lines leave the process whole, so lines of several worker processes never merge."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from worker.logs import configure_logging


class _PipeLike:
    """What a Dramatiq worker process has as stderr: every ``write()`` travels to the parent as one message."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved, handlers = structlog.get_config(), list(logging.getLogger().handlers)
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers


@pytest.mark.usefixtures("restore_logging")
def test_each_json_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _PipeLike()
    monkeypatch.setattr(sys, "stderr", pipe)  # here, not in a fixture: pytest swaps stderr between phases
    configure_logging("json")
    structlog.get_logger("crmsync.test").info("hello", tenant="acme")
    structlog.get_logger("crmsync.test").warning("again", tenant="globex")
    assert len(pipe.writes) == 2
    assert all(w.endswith("\n") and w.count("\n") == 1 for w in pipe.writes)
    assert [json.loads(w)["tenant"] for w in pipe.writes] == ["acme", "globex"]
