"""Composite (``/composite``): up to 25 subrequests, one counted call; ``/composite/sobjects`` is
sObject Collections (``sobject_collections``)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from emulator.call import Call, Reply
from emulator.errors import ApiError, not_found
from emulator.rest import register, route
from emulator.sobject_collections import collections_resource, flag

__all__ = ["MAX_SUBREQUESTS"]

MAX_SUBREQUESTS = 25
_VERSIONED = re.compile(r"^/services/data/v(\d+\.\d)/(.*)$")
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_HALTED = "The transaction was rolled back since another operation in the same transaction failed."


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    if isinstance(value, str):
        return _REFERENCE.sub(lambda m: str(_lookup(m, results)), value)
    return value


def _lookup(match: re.Match[str], results: dict[str, Any]) -> Any:
    value: Any = results.get(match.group(1))
    for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", match.group(2)):
        key, index = step
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            value = None
        if value is None:
            break
    if value is None:
        raise ApiError(400, "PROCESSING_HALTED",
                       f"Invalid reference specified. No value for {match.group(0)[2:-1]} found.")
    return value


def _subrequest(call: Call, request: Any, results: dict[str, Any]) -> Reply:
    if not isinstance(request, dict) or not request.get("referenceId") or not request.get("url"):
        raise ApiError(400, "INVALID_INPUT", "Each subrequest needs method, url and referenceId")
    url = urlsplit(_resolve(str(request["url"]), results))
    match = _VERSIONED.match(url.path)
    if match is None or match.group(2).rstrip("/") == "composite":
        raise ApiError(400, "INVALID_INPUT", f"The URL {request['url']} is not supported in a composite request")
    body = request.get("body")
    sub = Call(call.registry, call.org, str(request.get("method", "GET")).upper(), match.group(1),
               [p for p in match.group(2).split("/") if p], dict(parse_qsl(url.query)), call.headers,
               b"" if body is None else json.dumps(_resolve(body, results)).encode())
    return route(sub)


def _composite(call: Call) -> Reply:
    if len(call.parts) > 1 and call.parts[1] == "sobjects":
        return collections_resource(call)
    if len(call.parts) > 1:
        raise not_found()
    if call.method != "POST":
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{call.method}' not allowed. Allowed are POST")
    body = call.json_object()
    requests = body.get("compositeRequest")
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "JSON_PARSER_ERROR", "compositeRequest must be a non-empty list")
    if len(requests) > MAX_SUBREQUESTS:
        raise ApiError(400, "LIMIT_EXCEEDED", f"Exceeded max limit of subrequests allowed ({MAX_SUBREQUESTS})")
    all_or_none = flag(body.get("allOrNone", False))
    results: dict[str, Any] = {}
    answers: list[dict[str, Any]] = []
    with call.org.store.transaction() as rollback:
        for request in requests:
            try:
                reply = _subrequest(call, request, results)
            except ApiError as error:
                reply = Reply(error.status, error.body())
            reference = str(request.get("referenceId", "")) if isinstance(request, dict) else ""
            results[reference] = reply.body
            answers.append({"body": reply.body, "httpHeaders": reply.headers, "httpStatusCode": reply.status,
                            "referenceId": reference})
            if reply.status >= 400 and all_or_none:
                rollback()
                halted = ApiError(400, "PROCESSING_HALTED", _HALTED).body()
                for answer in answers[:-1]:
                    answer.update(body=halted, httpHeaders={}, httpStatusCode=400)
                answers.extend({"body": halted, "httpHeaders": {}, "httpStatusCode": 400,
                                "referenceId": r.get("referenceId") if isinstance(r, dict) else None}
                               for r in requests[len(answers):])
                break
    return Reply(200, {"compositeResponse": answers})


register("composite", _composite)
