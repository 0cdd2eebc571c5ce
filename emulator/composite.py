"""sObject Collections (``/composite/sobjects``) and Composite (``/composite``): one counted call each."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from emulator.call import Call, Reply
from emulator.errors import ApiError, not_found
from emulator.ids import to_18
from emulator.rest import register, route
from emulator.schema import lookup_object
from emulator.store import Store

__all__ = ["MAX_COLLECTION", "MAX_SUBREQUESTS"]

MAX_COLLECTION = 200
MAX_SUBREQUESTS = 25
_VERSIONED = re.compile(r"^/services/data/v(\d+\.\d)/(.*)$")
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_ROLLED_BACK = ApiError(400, "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using "
                        "AllOrNone header")
_HALTED = "The transaction was rolled back since another operation in the same transaction failed."

Operation = Callable[[Store, Any], tuple[str, bool]]


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _object_name(record: dict[str, Any], default: str | None) -> str:
    attributes = record.get("attributes")
    named = attributes.get("type") if isinstance(attributes, dict) else None
    sobject = lookup_object(str(named or default or ""))
    if sobject is None:
        raise ApiError(400, "INVALID_TYPE", f"sObject type '{named or ''}' is not supported.")
    return sobject.name


def _run(call: Call, operation: Operation, items: list[Any], all_or_none: bool, upsert: bool) -> Reply:
    if len(items) > MAX_COLLECTION:
        raise ApiError(400, "EXCEEDED_ID_LIMIT",
                       f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call")
    results: list[dict[str, Any]] = []
    failed = False
    with call.org.store.transaction() as rollback:
        for item in items:
            result: dict[str, Any]
            try:
                record_id, created = operation(call.org.store, item)
                result = {"id": record_id, "success": True, "errors": []}
            except ApiError as error:
                failed, created = True, False
                result = {"id": item if isinstance(item, str) else None, "success": False,
                          "errors": [error.collection_item()]}
            if upsert:
                result["created"] = created
            results.append(result)
        if failed and all_or_none:
            rollback()
            for result in results:
                if result["success"]:
                    result.update(id=None, success=False, errors=[_ROLLED_BACK.collection_item()])
                    if upsert:
                        result["created"] = False
    return Reply(200, results)


def _records(call: Call) -> tuple[list[Any], bool]:
    body = call.json_object()
    records = body.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ApiError(400, "JSON_PARSER_ERROR", "records must be a list of objects")
    return records, _flag(body.get("allOrNone", False))


def _create(store: Store, record: dict[str, Any]) -> tuple[str, bool]:
    return store.create(_object_name(record, None), record), True


def _update(store: Store, record: dict[str, Any]) -> tuple[str, bool]:
    record_id = to_18(str(record.get("Id") or ""))
    if record_id is None:
        raise ApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
    store.update(_object_name(record, store.object_of(record_id)), record_id, record)
    return record_id, False


def _delete(store: Store, record_id: str) -> tuple[str, bool]:
    full = to_18(record_id)
    kind = store.object_of(full or "")
    if full is None or kind is None:
        raise ApiError(400, "MALFORMED_ID", f"malformed id {record_id}")
    store.delete(kind, full)
    return full, False


def _collections(call: Call) -> Reply:
    rest, method = call.parts[2:], call.method
    if not rest and method == "POST":
        return _run(call, _create, *_records(call), upsert=False)
    if not rest and method == "PATCH":
        return _run(call, _update, *_records(call), upsert=False)
    if not rest and method == "DELETE":
        ids = [i for i in call.params.get("ids", "").split(",") if i]
        return _run(call, _delete, ids, _flag(call.params.get("allOrNone", False)), upsert=False)
    if len(rest) == 2 and method == "PATCH":
        kind, field_name = rest

        def upsert(store: Store, record: dict[str, Any]) -> tuple[str, bool]:
            value = next((v for k, v in record.items() if k.lower() == field_name.lower()), None)
            if value is None:
                raise ApiError(400, "MISSING_ARGUMENT", f"{field_name} not specified", [field_name])
            return store.upsert(_object_name(record, kind), field_name, str(value), record)

        return _run(call, upsert, *_records(call), upsert=True)
    if len(rest) == 1 and method == "GET":
        sobject = lookup_object(rest[0])
        if sobject is None:
            raise not_found()
        return Reply(200, [_retrieve(call, sobject.name, i) for i in call.params.get("ids", "").split(",") if i])
    raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed here")


def _retrieve(call: Call, kind: str, record_id: str) -> dict[str, Any] | None:
    try:
        record = call.org.store.get(kind, record_id)
    except ApiError:
        return None
    names = [n for n in call.params.get("fields", "Id").split(",") if n]
    url = f"/services/data/v{call.version}/sobjects/{kind}/{record['Id']}"
    return {"attributes": {"type": kind, "url": url}, **{n: record.get(n) for n in names}}


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
        return _collections(call)
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
    all_or_none = _flag(body.get("allOrNone", False))
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
