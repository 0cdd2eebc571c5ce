"""From one HTTP request to one response: versions, OAuth, the metered REST and Bulk APIs and the admin path."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from emulator import bulk, composite  # noqa: F401 - composite registers /composite in the REST routes
from emulator.admin import admin_call
from emulator.bulk_jobs import DEFAULT_BULK_RATE
from emulator.call import JSON_CONTENT_TYPE, Call, Reply
from emulator.control import Control
from emulator.errors import ApiError, not_found
from emulator.faults import FaultPlan
from emulator.identity import identity, identity_url, userinfo
from emulator.oauth import OAuthError, token_grant
from emulator.orgs import Org
from emulator.registry import Registry
from emulator.rest import route

__all__ = ["ADMIN_PREFIX", "API_VERSIONS", "App", "HttpRequest", "HttpResponse"]

ADMIN_PREFIX = "/_emulator/"
API_VERSIONS = tuple(f"{v}.0" for v in range(31, 63))
_VERSIONED = re.compile(r"^/services/data/v(\d+\.\d)(?:/(.*))?$")
_SEASONS = ("Winter", "Spring", "Summer")
_FAULT_ERRORS = {
    "http500": ApiError(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId "
                        "if you contact support: 1234567890-12345 (-1234567890)"),
    "http503": ApiError(503, "SERVER_UNAVAILABLE", "Server is unavailable, please try again later."),
    "concurrent_limit": ApiError(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
}
_INVALID_SESSION = ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


@dataclass(frozen=True)
class HttpRequest:
    """A parsed request; header names are lower case."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class HttpResponse:
    """What to send back, after ``delay`` seconds; ``drop`` closes the connection without an answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    """A JSON response; ``None`` is an empty body (204)."""
    response = HttpResponse(status, headers=dict(headers or {}))
    if body is not None:
        response.body = json.dumps(body, separators=(",", ":")).encode()
        response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


def _reply(reply: Reply) -> HttpResponse:
    """A handler's reply on the wire: raw bytes (Bulk API CSV) as they are, anything else as JSON."""
    if isinstance(reply.body, bytes):
        return HttpResponse(reply.status, reply.body, {**reply.headers, "Content-Type": reply.content_type})
    return _json(reply.status, reply.body, reply.headers)


def _versions() -> list[dict[str, str]]:
    # v20.0 was Winter '11; three releases a year since.
    return [{"label": f"{_SEASONS[(int(float(v)) - 20) % 3]} '{11 + (int(float(v)) - 20) // 3}",
             "url": f"/services/data/v{v}", "version": v} for v in API_VERSIONS]


class App:
    """The emulator's request handler; safe to call from any thread."""

    def __init__(self, registry: Registry, admin_token: str, bulk_rate: float = DEFAULT_BULK_RATE) -> None:
        self.registry = registry
        self.control = Control(registry, bulk_rate)
        self._admin_token = admin_token
        self._versions = _json(200, _versions())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Answer one request."""
        path, _, query = request.target.partition("?")
        if path.startswith(ADMIN_PREFIX):
            return self._admin(request, path[len(ADMIN_PREFIX):])
        if path.rstrip("/") == "/services/data" and request.method == "GET":
            return self._versions
        if path.rstrip("/") == "/services/oauth2/token":
            return self._token(request, path)
        if path.rstrip("/") == "/services/oauth2/userinfo" or path.startswith("/id/"):
            return self._identity(request, path, query)
        match = _VERSIONED.match(path)
        if match is None:
            return _json(404, not_found().body())
        return self._api(request, path, query, match.group(1), match.group(2) or "")

    def _token(self, request: HttpRequest, path: str) -> HttpResponse:
        if request.method != "POST":
            return _json(405, {"error": "invalid_request", "error_description": "must use HTTP POST"})
        with self.registry.lock:
            try:
                org, body = token_grant(self.registry, request.body, request.headers.get("authorization", ""))
            except OAuthError as error:
                return _json(error.status, error.body)
            # Salesforce does not document whether token requests count; by default they do not.
            counted = self.registry.settings.count_token_requests
            used = org.usage.add() if counted else org.usage.used
            org.record({"time": self.registry.clock(), "method": "POST", "path": path, "query": "",
                        "status": 200, "counted": counted, "fault": None, "latency": 0.0, "api_usage": used})
        return _json(200, body)

    def _identity(self, request: HttpRequest, path: str, query: str) -> HttpResponse:
        """The identity URL and UserInfo: free, logged, and refusing a bad token as Salesforce does (403)."""
        params = dict(parse_qsl(query))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            token = params.get("oauth_token", "")
        with self.registry.lock:
            org = self.registry.authenticate(token.strip())
            if org is None:
                return HttpResponse(403, b"Bad_OAuth_Token", {"Content-Type": "text/plain"})
            base = self.registry.base_url
            if path.startswith("/id/"):
                ok = path.rstrip("/") == identity_url("", org)
                response = _json(200, identity(base, org, params.get("version"))) if ok \
                    else HttpResponse(403, b"Bad_Id", {"Content-Type": "text/plain"})
            else:
                response = _json(200, userinfo(base, org))
            org.record({"time": self.registry.clock(), "method": request.method, "path": path, "query": query,
                        "status": response.status, "counted": False, "fault": None, "latency": 0.0,
                        "api_usage": org.usage.used})
        return response

    def _api(self, request: HttpRequest, path: str, query: str, version: str, rest: str) -> HttpResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.registry.lock:
            org = self.registry.authenticate(token.strip()) if scheme.lower() in ("bearer", "oauth") else None
            if org is None:
                return _json(401, _INVALID_SESSION.body())
            used, served = org.usage.admit()
            # Bulk jobs progress with the clock; whatever they processed by now is visible to this request.
            org.bulk.advance()
            plan = FaultPlan()
            if not served:
                response = _json(403, [{"message": "TotalRequests Limit exceeded.",
                                        "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
            else:
                plan = org.faults.draw()
                response = self._answer(request, org, query, version, rest, plan=plan)
            response.headers["Sforce-Limit-Info"] = org.usage.limit_info(used)
            response.delay = plan.delay
            org.record({"time": self.registry.clock(), "method": request.method, "path": path, "query": query,
                        "status": None if response.drop else response.status, "counted": True,
                        "fault": plan.kind, "latency": plan.delay, "api_usage": used})
        return response

    def _answer(self, request: HttpRequest, org: Org, query: str, version: str, rest: str, *,
                plan: FaultPlan) -> HttpResponse:
        if plan.kind == "drop":
            return HttpResponse(0, drop=True)
        if plan.kind in _FAULT_ERRORS:
            error = _FAULT_ERRORS[plan.kind]
            return _json(error.status, error.body())
        if version not in API_VERSIONS:
            return _json(404, not_found().body())
        call = Call(self.registry, org, request.method, version, [p for p in rest.split("/") if p],
                    dict(parse_qsl(query)), request.headers, request.body)
        # Bulk API 2.0 is routed here rather than among the REST routes, so Composite cannot reach it.
        return _reply(bulk.route(call) if call.parts[:1] == ["jobs"] else route(call))

    def _admin(self, request: HttpRequest, name: str) -> HttpResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self._admin_token):
            return _json(401, {"error": "admin token required"})
        status, body = admin_call(self.control, request.method, name, request.body)
        return _json(status, body)
