"""Checking and normalising field values written through the API, with Salesforce's error codes."""

from __future__ import annotations

import re
from typing import Any

from emulator.errors import ApiError
from emulator.ids import to_18
from emulator.schema import NUMBER_TYPES, Field, SObject
from emulator.sftime import format_epoch, parse_date, parse_datetime

__all__ = ["check_writable", "coerce"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _json_error(field: Field, value: Any) -> ApiError:
    return ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {field.type} from {type(value).__name__} value {value!r} "
        "or request may be missing a required field",
    )


def coerce(field: Field, value: Any) -> Any:
    """``value`` as stored for ``field``; raises the ApiError Salesforce would answer."""
    if value is None:
        if not field.nillable:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field.name}]",
                           [field.name])
        return None
    kind = field.type
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _json_error(field, value)
        return value
    if kind in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _json_error(field, value)
        if kind == "int" and value != int(value):
            raise _json_error(field, value)
        return int(value) if kind == "int" else value
    if not isinstance(value, str):
        raise _json_error(field, value)
    if kind == "date":
        if parse_date(value) is None:
            raise _json_error(field, value)
        return value
    if kind == "datetime":
        epoch = parse_datetime(value)
        if epoch is None:
            raise _json_error(field, value)
        return format_epoch(epoch)
    return _coerce_text(field, value)


def _coerce_text(field: Field, value: str) -> str:
    if field.type == "reference":
        full = to_18(value)
        if full is None:
            raise ApiError(400, "MALFORMED_ID", f"{field.name}: id value of incorrect type: {value}",
                           [field.name])
        return full
    if field.type == "email" and value and not _EMAIL.match(value):
        raise ApiError(400, "INVALID_EMAIL_ADDRESS", f"{field.name}: invalid email address: {value}",
                       [field.name])
    if field.length and len(value) > field.length:
        raise ApiError(400, "STRING_TOO_LONG",
                       f"{field.name}: data value too large: {value[:20]} (max length={field.length})",
                       [field.name])
    return value


def check_writable(sobject: SObject, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """The body's fields under their canonical names, coerced; raises on unknown or read-only fields."""
    values: dict[str, Any] = {}
    read_only = []
    for name, value in body.items():
        if name == "attributes":
            continue
        field = sobject.field(name)
        if field is None:
            raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject.name}",
                           [name])
        if field.name == "Id":
            if creating:
                raise ApiError(400, "INVALID_FIELD", "Id: cannot specify Id in an insert call", ["Id"])
            continue
        if not (field.createable if creating else field.updateable):
            read_only.append(field.name)
            continue
        values[field.name] = coerce(field, value)
    if read_only:
        raise ApiError(
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(read_only)}. Please check the security settings "
            "of this field and verify that it is read/write for your profile or permission set.",
            read_only,
        )
    return values
