"""References to secrets: where a secret lives (``file:/abs/path`` or ``env:NAME``), never the secret itself.

Connections store only references. The secret is read when a token is needed and kept in memory only for
that request. Errors name the reference, never the content.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from worker.errors import SecretUnavailable

__all__ = ["env_ref", "file_ref", "read_secret"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Secrets are small (a key PEM is a few kB); a bound keeps a wrong path (a disk image, /dev/zero) from hanging us.
_MAX_SECRET_BYTES = 64 * 1024



def file_ref(path: str) -> str:
    """``file:`` reference to ``path``, made absolute so it means the same from any working directory."""
    if not path:
        raise SecretUnavailable("empty secret file path")
    return f"file:{Path(path).expanduser().absolute()}"


def env_ref(name: str) -> str:
    """``env:`` reference to the environment variable ``name``."""
    if not _ENV_NAME.fullmatch(name):
        raise SecretUnavailable(f"invalid environment variable name {name!r}")
    return f"env:{name}"


def read_secret(ref: str) -> str:
    """The secret ``ref`` points to, with surrounding whitespace (a trailing newline) stripped.

    Raises ``SecretUnavailable`` if it is missing, unreadable, too large, not UTF-8 text or empty.
    """
    kind, _, where = ref.partition(":")
    if kind == "env" and _ENV_NAME.fullmatch(where):
        value = os.environ.get(where, "").strip()
        if not value:
            raise SecretUnavailable(f"environment variable {where} is not set or empty")
        return value
    if kind == "file" and where.startswith("/"):
        return _read_file(Path(where))
    raise SecretUnavailable(f"invalid secret reference {ref!r}: use file:/absolute/path or env:NAME")


def _read_file(path: Path) -> str:
    try:
        if not path.is_file():
            raise SecretUnavailable(f"secret file {path} does not exist or is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(_MAX_SECRET_BYTES + 1)
    except OSError as exc:
        # strerror only ("Permission denied"): the OSError itself is not chained, so nothing else leaks.
        raise SecretUnavailable(f"secret file {path} is not readable: {exc.strerror or type(exc).__name__}") from None
    if len(data) > _MAX_SECRET_BYTES:
        raise SecretUnavailable(f"secret file {path} is larger than {_MAX_SECRET_BYTES} bytes: is it the right file?")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretUnavailable(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise SecretUnavailable(f"secret file {path} is empty")
    return value
