"""One request to the versioned REST API, as the route handlers see it, and their reply."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import ApiError
from emulator.orgs import Org
from emulator.registry import Registry

__all__ = ["JSON_CONTENT_TYPE", "Call", "Reply", "method_not_allowed"]

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"


@dataclass
class Reply:
    """A handler's answer: status, body and extra headers.

    The body is JSON (None for no content), or raw ``bytes`` sent as they are with ``content_type``.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_CONTENT_TYPE


@dataclass
class Call:
    """An authenticated request under ``/services/data/v{version}/``; ``parts`` are the path segments after it."""

    registry: Registry
    org: Org
    method: str
    version: str
    parts: list[str]
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    def json(self) -> Any:
        """The parsed JSON body; 400 JSON_PARSER_ERROR when it does not parse."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        """The JSON body, which must be an object."""
        value = self.json()
        if not isinstance(value, dict):
            raise ApiError(400, "JSON_PARSER_ERROR",
                           "Cannot deserialize instance of SObject from a value that is not an object")
        return value


def method_not_allowed(call: Call, allowed: str) -> ApiError:
    """405 METHOD_NOT_ALLOWED naming the methods the resource takes."""
    return ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{call.method}' not allowed. Allowed are {allowed}")
