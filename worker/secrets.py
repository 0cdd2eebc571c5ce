"""References to secrets: where a secret lives (``file:/abs/path`` or ``env:NAME``), never the secret itself.

Connections (and the SMTP password) store only references. The secret is read when it is needed and kept in
memory only for that request. Errors name the reference, never the content.

A reference may not name just anything on the host: every worker process holds every tenant's secrets and the
worker's own settings, and whatever a reference names is sent to a login host. So a file must resolve, after
symlinks, inside one of ``CRMSYNC_SECRET_DIRS`` (default ``/run/secrets``), and a variable must be named
``CRMSYNC_SECRET_*``. ``read_secret`` checks this every time, before it opens anything, so a reference written
before these rules, or into Redis by hand, is refused as it would be at connect time.
"""

from __future__ import annotations

import os
import re
import stat

from worker.errors import SecretUnavailable
from worker.settings import SecretSettings

__all__ = ["env_ref", "file_ref", "read_secret"]

_ENV_NAME = re.compile(r"CRMSYNC_SECRET_[A-Za-z0-9_]+")
# Variables under the prefix that are settings, not secrets.
_SETTINGS = frozenset({"CRMSYNC_SECRET_DIRS"})
# Secrets are small (a key PEM is a few kB); a bound keeps a wrong path (a disk image) from hanging us.
_MAX_SECRET_BYTES = 64 * 1024


def file_ref(path: str) -> str:
    """``file:`` reference to ``path``, made absolute (and ``..`` resolved) so it means the same from any
    working directory. Where it may point is checked by ``read_secret``."""
    if not path:
        raise SecretUnavailable("empty secret file path")
    return f"file:{os.path.abspath(os.path.expanduser(path))}"


def env_ref(name: str) -> str:
    """``env:`` reference to the environment variable ``name``, which must be named ``CRMSYNC_SECRET_*``."""
    _check_env_name(name)
    return f"env:{name}"


def read_secret(ref: str, settings: SecretSettings | None = None) -> str:
    """The secret ``ref`` points to, with surrounding whitespace (a trailing newline) stripped.

    ``settings`` (default: read from the environment) say where secret files may be. Raises
    ``SecretUnavailable`` if the reference names a file outside them or a variable not named
    ``CRMSYNC_SECRET_*`` (then nothing is opened), or if the secret is missing, unreadable, too large, not UTF-8
    text or empty.
    """
    kind, _, where = ref.partition(":")
    if kind == "env":
        _check_env_name(where)
        value = os.environ.get(where, "").strip()
        if not value:
            raise SecretUnavailable(f"environment variable {where} is not set or empty")
        return value
    if kind == "file" and where.startswith("/"):
        return _read_file(where, _confined(where, settings or SecretSettings.from_env()))
    # Not quoted: a reference written by hand could be the secret itself.
    raise SecretUnavailable("invalid secret reference: use file:/absolute/path or env:NAME")


def _check_env_name(name: str) -> None:
    if not _ENV_NAME.fullmatch(name) or name in _SETTINGS:
        raise SecretUnavailable(f"invalid secret variable name {name!r}: secret variables must be named "
                                "CRMSYNC_SECRET_*, so that no other setting of the worker can be named")


def _confined(path: str, settings: SecretSettings) -> str:
    """``path`` with every symlink resolved, if that lies inside a secret directory (itself resolved)."""
    real = os.path.realpath(path)
    for directory in settings.secret_dirs:
        root = os.path.realpath(directory)
        # A directory that resolves to / would confine nothing.
        if root != "/" and real.startswith(root + os.sep):
            return real
    shown = f"{path} (resolving to {real})" if real != path else path
    allowed = ":".join(str(d) for d in settings.secret_dirs)
    raise SecretUnavailable(f"secret file {shown} is outside the secret directories ({allowed}): put it in one "
                            "or list its directory in CRMSYNC_SECRET_DIRS")


def _read_file(path: str, real: str) -> str:
    missing = f"secret file {path} does not exist or is not a regular file"
    fd = -1
    try:
        # The resolved path is opened without following a symlink, so a link swapped in after the check is
        # refused; non-blocking, so a FIFO cannot hang us before fstat says it is no regular file.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SecretUnavailable(missing)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(_MAX_SECRET_BYTES + 1)
    except FileNotFoundError:
        raise SecretUnavailable(missing) from None
    except OSError as exc:
        # strerror only ("Permission denied"): the OSError itself is not chained, so nothing else leaks.
        raise SecretUnavailable(f"secret file {path} is not readable: {exc.strerror or type(exc).__name__}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > _MAX_SECRET_BYTES:
        raise SecretUnavailable(f"secret file {path} is larger than {_MAX_SECRET_BYTES} bytes: is it the right file?")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretUnavailable(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise SecretUnavailable(f"secret file {path} is empty")
    return value
