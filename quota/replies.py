"""Redis replies as text, whether the client decodes responses or not."""

from __future__ import annotations

from typing import overload

__all__ = ["text"]


@overload
def text(value: bytes | str) -> str: ...
@overload
def text(value: object) -> str | None: ...
def text(value: object) -> str | None:
    """``value`` as a ``str``: bytes decoded as UTF-8 (undecodable bytes replaced, so a hand-written value can
    never raise here), a ``str`` as it is, anything else (a missing value) ``None``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None
