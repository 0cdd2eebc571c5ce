"""Safe SOQL: names checked against Salesforce's naming rules, literals escaped, never concatenated raw.

No job input reaches a query except through ``check_name`` (objects and fields) and ``literal``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from quota.errors import InvalidInput
from worker.errors import InvalidName

__all__ = ["check_name", "datetime_literal", "literal", "pull_query"]

# An API name: a letter, then letters, digits and single underscores, not ending in one; optionally a
# namespace prefix (ns__) and a custom suffix (__c, __r, __mdt, ...). At most 80 characters.
_PART = r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*"
_NAME = re.compile(rf"(?:{_PART}__)?{_PART}(?:__(?:c|r|mdt|e|x|b|kav|ka|share|history|feed))?")
_MAX_NAME = 80
_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}



def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a valid Salesforce API name, else raise ``InvalidName``."""
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidName(
            f"invalid {what} {name!r}: Salesforce API names are letters, digits and single underscores, "
            "starting with a letter (custom names end in __c)"
        )
    return name


def literal(value: str | int | float | bool | datetime | None) -> str:
    """A SOQL literal for ``value``: strings quoted and escaped, datetimes unquoted in UTC."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return datetime_literal(value)
    if isinstance(value, int | float):
        return repr(value)
    return "'" + "".join(_ESCAPES.get(ch, ch) for ch in value) + "'"


def datetime_literal(value: datetime) -> str:
    """An unquoted SOQL datetime literal (``2024-01-01T00:00:00.000Z``); naive datetimes are refused."""
    if value.tzinfo is None:
        raise InvalidInput(f"datetime {value.isoformat()} has no time zone")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def pull_query(sobject: str, fields: Sequence[str], since: datetime | None, *, ordered: bool = True) -> str:
    """The incremental read of ``sobject``: every record modified at or after ``since``, oldest first
    (``ordered=False`` for a Bulk API 2.0 query job, which takes no ORDER BY)."""
    names = [check_name(f, "field") for f in dict.fromkeys(["Id", "SystemModstamp", *fields])]
    # Every name is checked against the naming rules and the datetime is formatted by us: nothing raw goes in.
    query = f"SELECT {', '.join(names)} FROM {check_name(sobject, 'object')}"  # noqa: S608
    if since is not None:
        query += f" WHERE SystemModstamp >= {datetime_literal(since)}"
    return query + " ORDER BY SystemModstamp ASC" if ordered else query
