"""Routes of ``/services/data/v{version}/``: resources, limits, query, sObjects; composite lives apart."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from emulator.call import Call, Reply, method_not_allowed
from emulator.errors import ApiError, not_found
from emulator.identity import identity_url
from emulator.org_limits import org_limits
from emulator.query import query_resource
from emulator.schema import OBJECTS, SObject, describe, describe_global_entry, lookup_object
from emulator.sftime import format_epoch, parse_datetime

__all__ = ["register", "route"]

_REPLICATION_DAYS = 30


def _resources(call: Call) -> Reply:
    base = f"/services/data/v{call.version}"
    names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
    # Salesforce lists the identity URL of the caller too, as an absolute URL (the others are paths).
    return Reply(200, {**{name: f"{base}/{name}" for name in names},
                       "identity": identity_url(call.registry.base_url, call.org)})


def _limits(call: Call) -> Reply:
    if call.method != "GET":
        raise method_not_allowed(call, "GET")
    return Reply(200, org_limits(call.org))


def _record_body(call: Call, sobject: SObject, record: dict[str, Any]) -> dict[str, Any]:
    url = f"/services/data/v{call.version}/sobjects/{sobject.name}/{record['Id']}"
    wanted = call.params.get("fields")
    names = list(record) if not wanted else [_field_name(sobject, n) for n in wanted.split(",")]
    return {"attributes": {"type": sobject.name, "url": url}, **{n: record[n] for n in names}}


def _field_name(sobject: SObject, name: str) -> str:
    found = sobject.field(name.strip())
    if found is None:
        raise ApiError(400, "INVALID_FIELD", f"No such column '{name.strip()}' on entity '{sobject.name}'")
    return found.name


def _replication_window(call: Call) -> tuple[float, float]:
    bounds = []
    for name in ("start", "end"):
        text = call.params.get(name)
        if text is None:
            raise ApiError(400, "MISSING_ARGUMENT", f"{name} parameter is missing")
        moment = parse_datetime(text)
        if moment is None:
            raise ApiError(400, "INVALID_REPLICATION_DATE", f"{name} is not a valid ISO 8601 datetime: {text}")
        # Salesforce works in whole minutes: seconds are dropped from both ends.
        bounds.append(math.floor(moment / 60) * 60)
    start, end = bounds
    now = call.registry.clock()
    if start >= end:
        raise ApiError(400, "INVALID_REPLICATION_DATE",
                       "startDate must chronologically precede endDate by more than one minute")
    if start < now - _REPLICATION_DAYS * 86400:
        raise ApiError(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
    return start, min(end, math.floor(now / 60) * 60)


def _replication(call: Call, sobject: SObject, kind: str) -> Reply:
    start, end = _replication_window(call)
    store = call.org.store
    if kind == "updated":
        return Reply(200, {"ids": store.updated_ids(sobject.name, start, end),
                           "latestDateCovered": format_epoch(end)})
    return Reply(200, {
        "deletedRecords": store.deleted_records(sobject.name, start, end),
        "earliestDateAvailable": format_epoch(math.floor(store.created_at / 60) * 60),
        "latestDateCovered": format_epoch(end),
    })


def _upserted(call: Call, record_id: str, created: bool) -> Reply:
    body = {"id": record_id, "success": True, "errors": [], "created": created}
    if created:
        return Reply(201, body)
    # Before API 46.0 an upsert that updated answered 204 without a body.
    return Reply(200, body) if float(call.version) >= 46 else Reply(204)


def _sobject_root(call: Call, sobject: SObject) -> Reply:
    if call.method == "POST":
        record_id = call.org.store.create(sobject.name, call.json_object())
        return Reply(201, {"id": record_id, "success": True, "errors": []},
                     {"Location": f"/services/data/v{call.version}/sobjects/{sobject.name}/{record_id}"})
    if call.method != "GET":
        raise method_not_allowed(call, "GET, POST")
    return Reply(200, {"objectDescribe": describe_global_entry(sobject, call.version), "recentItems": []})


def _sobject_info(call: Call, sobject: SObject, kind: str) -> Reply:
    if call.method != "GET":
        raise method_not_allowed(call, "GET")
    if kind == "describe":
        return Reply(200, describe(sobject, call.version))
    return _replication(call, sobject, kind)


def _record(call: Call, sobject: SObject, record_id: str) -> Reply:
    store = call.org.store
    if call.method == "GET":
        return Reply(200, _record_body(call, sobject, store.get(sobject.name, record_id)))
    if call.method == "PATCH":
        store.update(sobject.name, record_id, call.json_object())
        return Reply(204)
    if call.method == "DELETE":
        store.delete(sobject.name, record_id)
        return Reply(204)
    raise method_not_allowed(call, "GET, PATCH, DELETE")


def _by_external_id(call: Call, sobject: SObject, field_name: str, value: str) -> Reply:
    store = call.org.store
    if call.method == "PATCH":
        record_id, created = store.upsert(sobject.name, field_name, value, call.json_object())
        return _upserted(call, record_id, created)
    if call.method not in ("GET", "DELETE"):
        raise method_not_allowed(call, "GET, PATCH, DELETE")
    record = store.get_by_external_id(sobject.name, field_name, value)
    if call.method == "GET":
        return Reply(200, _record_body(call, sobject, record))
    store.delete(sobject.name, record["Id"])
    return Reply(204)


def _sobject(call: Call) -> Reply:
    if len(call.parts) == 1:
        if call.method != "GET":
            raise method_not_allowed(call, "GET")
        return Reply(200, {"encoding": "UTF-8", "maxBatchSize": 200,
                           "sobjects": [describe_global_entry(o, call.version) for o in OBJECTS.values()]})
    sobject = lookup_object(call.parts[1])
    if sobject is None:
        raise ApiError(404, "NOT_FOUND", f"The requested resource does not exist: sObject type "
                       f"'{call.parts[1]}' is not supported.")
    rest = call.parts[2:]
    if not rest:
        return _sobject_root(call, sobject)
    if len(rest) == 1 and rest[0] in ("describe", "updated", "deleted"):
        return _sobject_info(call, sobject, rest[0])
    if len(rest) == 1:
        return _record(call, sobject, rest[0])
    if len(rest) == 2:
        return _by_external_id(call, sobject, rest[0], rest[1])
    raise not_found()


Handler = Callable[[Call], Reply]
_ROUTES: dict[str, Handler] = {"query": query_resource, "queryAll": query_resource, "sobjects": _sobject}


def register(name: str, handler: Handler) -> None:
    """Add a top-level resource (composite registers itself here, since it calls back into ``route``)."""
    _ROUTES[name] = handler


def route(call: Call) -> Reply:
    """Answer one versioned REST call; ApiError becomes its Salesforce error body."""
    try:
        if not call.parts:
            return _resources(call)
        if call.parts == ["limits"]:
            return _limits(call)
        handler = _ROUTES.get(call.parts[0])
        if handler is None:
            raise not_found()
        return handler(call)
    except ApiError as error:
        return Reply(error.status, error.body())
