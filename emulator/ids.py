"""Salesforce record ids: 15-character case-sensitive ids and their 18-character case-safe form."""

from __future__ import annotations

import string

__all__ = ["BASE62", "IdFactory", "to_18"]

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX_ALPHABET = string.ascii_uppercase + "012345"


def _suffix(id15: str) -> str:
    # Each 5-character chunk becomes one letter whose bits mark which characters are upper case,
    # which is what makes the 18-character form survive case-insensitive systems.
    letters = []
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(id15[start : start + 5]) if ch.isupper())
        letters.append(_SUFFIX_ALPHABET[bits])
    return "".join(letters)


def to_18(record_id: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None when it is not an id."""
    if len(record_id) == 18 and record_id[15:] == _suffix(record_id[:15]):
        return record_id
    if len(record_id) == 15 and all(ch in BASE62 for ch in record_id):
        return record_id + _suffix(record_id)
    return None


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    return "".join(reversed(digits))


class IdFactory:
    """Hands out increasing, unique 18-character ids for one org; ``pod`` keeps orgs apart."""

    def __init__(self, pod: int) -> None:
        self._pod = _base62(pod, 2)
        self._next = 1

    def new(self, key_prefix: str) -> str:
        """A fresh id with ``key_prefix`` (``00Q`` for a Lead, ``001`` for an Account, ...)."""
        number = self._next
        self._next += 1
        return to_18(f"{key_prefix}{self._pod}0{_base62(number, 9)}") or ""
