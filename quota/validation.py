"""Checks for every value an admin or caller hands the quota package. Each refuses with a clear message."""

from __future__ import annotations

import re

from quota.errors import InvalidLimit, InvalidReserve, InvalidResetTime, InvalidTenant, InvalidWindow

__all__ = [
    "MAX_LIMIT",
    "MIN_LIMIT",
    "TENANT_PATTERN",
    "WINDOWS",
    "parse_limit",
    "parse_reserve",
    "parse_reset_time",
    "parse_window",
    "validate_tenant",
]

MIN_LIMIT = 100_000
# Lua numbers are doubles: keep every count exact inside the metering script.
MAX_LIMIT = 10**15

# Lowercase letters, digits, '-' and '_', 1 to 64 characters, starting with a letter or digit. Braces and
# colons are excluded because they would break the {tenant} hash tag and the key layout.
TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# How a tenant's credits come back: all at once at its reset time of day, or each 24 hours after it was taken.
WINDOWS = ("daily", "rolling")
_DIGITS = re.compile(r"[0-9]+")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _whole(value: object) -> int | None:
    # An int (never a bool) or a string of ASCII digits: what a CLI argument or a caller may pass as a count.
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


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
    number = _whole(value)
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


def parse_window(value: object) -> str:
    """Return ``value`` if it names a window mode (``daily`` or ``rolling``), else raise ``InvalidWindow``."""
    if value not in WINDOWS:
        raise InvalidWindow(f"invalid window {value!r}: use daily (credits return at the reset time each day) "
                            "or rolling (each credit returns 24 hours after it was taken, as Salesforce counts)")
    return str(value)


def parse_reserve(value: object, limit: int | None = None) -> int:
    """Return ``value`` as a reserve for essential work, or raise ``InvalidReserve``.

    Accepts an ``int`` (not ``bool``) or a string of ASCII digits; it must be below ``limit`` when given.
    """
    number = _whole(value)
    if number is None or number < 0 or number > MAX_LIMIT:
        raise InvalidReserve(f"invalid reserve {value!r}: the reserve for essential work must be a whole number "
                             "of credits, 0 or more, below the limit")
    if limit is not None and number >= limit:
        raise InvalidReserve(f"invalid reserve {number:,}: it must be below the limit ({limit:,}), so that normal "
                             "work has credits too")
    return number
