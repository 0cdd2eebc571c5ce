"""structlog setup: JSON lines in production, readable output in a terminal.

``CRMSYNC_LOG_FORMAT`` picks ``json`` or ``console``; by default a terminal gets console output and anything
else (a container, a pipe, a file) gets JSON. Context bound with ``structlog.contextvars`` (tenant, object,
job and message ids) is added to every line.
"""

from __future__ import annotations

import logging
import sys

import structlog

from worker.settings import log_format

__all__ = ["configure_logging"]


def configure_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    """Configure structlog (and the stdlib root logger that Dramatiq uses) once per process."""
    fmt = fmt or log_format() or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write() per line, newline included: in a Dramatiq worker process stderr is a pipe to the parent
        # in which every write() is a message, and print()'s separate newline let lines of two processes merge.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
