"""Checks for every value an admin or caller hands the quota package. Each refuses with a clear message."""

from __future__ import annotations

import re

from quota.errors import InvalidLimit, InvalidResetTime, InvalidTenant

__all__ = [
    "MAX_LIMIT",
    "MIN_LIMIT",
    "TENANT_PATTERN",
    "parse_limit",
    "parse_reset_time",
    "validate_tenant",
]

MIN_LIMIT = 100_000
# Lua numbers are doubles: keep every count exact inside the metering script.
MAX_LIMIT = 10**15

# Lowercase letters, digits, '-' and '_', 1 to 64 characters, starting with a letter or digit. Braces and
# colons are excluded because they would break the {tenant} hash tag and the key layout.
TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DIGITS = re.compile(r"[0-9]+")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def validate_tenant(tenant: object) -> str:
    """Return ``tenant`` if it is a valid tenant id, else raise ``InvalidTenant``."""
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidTenant(
            f"invalid tenant id {tenant!r}: use 1-64 characters of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )
    return tenant


def parse_limit(value: object) -> int:
    """Return ``value`` as a CRM API daily limit, or raise ``InvalidLimit``.

    Accepts an ``int`` (not ``bool``) or a string of ASCII digits; the result must be a whole number from
    100,000 to 10**15.
    """
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = None
    if number is None or not MIN_LIMIT <= number <= MAX_LIMIT:
        shown = f"{number:,}" if number is not None else repr(value)
        raise InvalidLimit(
            f"invalid limit {shown}: the CRM API daily limit must be a whole number "
            f"of at least 100,000 (and at most {MAX_LIMIT:,})"
        )
    return number


def parse_reset_time(value: object) -> int:
    """Return the minute of the UTC day that ``HH:MM`` names (0-1439), or raise ``InvalidResetTime``."""
    match = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidResetTime(f"invalid reset time {value!r}: use HH:MM in UTC, from 00:00 to 23:59")
    return int(match.group(1)) * 60 + int(match.group(2))
