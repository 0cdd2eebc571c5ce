"""Salesforce REST errors, rendered as the list bodies Salesforce sends (and as collection items)."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "malformed_query", "not_found"]


class ApiError(Exception):
    """One Salesforce error: ``status`` is the HTTP status of a plain REST call."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        """The REST body: a JSON list, which simple-salesforce indexes."""
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return [item]

    def collection_item(self) -> dict[str, Any]:
        """The per-record form used by sObject Collections (``statusCode``, not ``errorCode``)."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields or []}


def not_found(message: str = "The requested resource does not exist") -> ApiError:
    """404 NOT_FOUND."""
    return ApiError(404, "NOT_FOUND", message)


def malformed_query(message: str) -> ApiError:
    """400 MALFORMED_QUERY."""
    return ApiError(400, "MALFORMED_QUERY", message)
