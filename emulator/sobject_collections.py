"""sObject Collections (``/composite/sobjects``): create, update, upsert, delete and retrieve many records in
one counted call, with per-record results and ``allOrNone``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from emulator.call import Call, Reply
from emulator.errors import ApiError, not_found
from emulator.ids import to_18
from emulator.schema import SObject, lookup_object
from emulator.store import Store

__all__ = ["MAX_COLLECTION", "MAX_RETRIEVE", "collections_resource", "flag"]

MAX_COLLECTION = 200
MAX_RETRIEVE = 2000
_ROLLED_BACK = ApiError(400, "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using "
                        "AllOrNone header")

Operation = Callable[[Store, Any], tuple[str, bool]]


def flag(value: Any) -> bool:
    """A boolean option as JSON or a query parameter: ``true`` in any case."""
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
    return records, flag(body.get("allOrNone", False))


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


def _upsert(call: Call, kind: str, field_name: str) -> Reply:
    records, all_or_none = _records(call)
    sobject = lookup_object(kind)
    field = sobject.field(field_name) if sobject is not None else None
    name = field.name if field is not None else field_name

    def value_of(record: dict[str, Any]) -> Any:
        return next((v for k, v in record.items() if k.lower() == field_name.lower()), None)

    # Salesforce fails every record whose external id appears more than once in the request; the rest of the
    # batch goes on (or, with allOrNone, is rolled back with them).
    seen = Counter(str(v) for v in map(value_of, records) if v is not None)
    duplicates = {value for value, n in seen.items() if n > 1}

    def upsert(store: Store, record: dict[str, Any]) -> tuple[str, bool]:
        value = value_of(record)
        if value is None:
            raise ApiError(400, "MISSING_ARGUMENT", f"{field_name} not specified", [field_name])
        if str(value) in duplicates:
            raise ApiError(400, "DUPLICATE_VALUE", f"Duplicate external id specified: {value}", [name])
        return store.upsert(_object_name(record, kind), field_name, str(value), record)

    return _run(call, upsert, records, all_or_none, upsert=True)


def _retrieve(call: Call, sobject: SObject, ids: list[str], fields: list[str]) -> Reply:
    """The records of ``ids`` (null for an id that names none) with ``fields``; an unknown field fails all."""
    if len(ids) > MAX_RETRIEVE:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", f"Maximum number of ids ({MAX_RETRIEVE}) exceeded")
    names = []
    for text in fields:
        found = sobject.field(text.strip())
        if found is None:
            raise ApiError(400, "INVALID_FIELD", f"No such column '{text.strip()}' on entity '{sobject.name}'")
        names.append(found.name)
    base = f"/services/data/v{call.version}/sobjects/{sobject.name}/"
    rows: list[dict[str, Any] | None] = []
    for record_id in ids:
        try:
            record = call.org.store.get(sobject.name, record_id)
        except ApiError:
            rows.append(None)
            continue
        rows.append({"attributes": {"type": sobject.name, "url": base + record["Id"]}, **{n: record[n] for n in names}})
    return Reply(200, rows)


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ApiError(400, "JSON_PARSER_ERROR", "ids and fields must be lists of strings")
    return value


def _retrieve_request(call: Call, sobject: SObject) -> Reply:
    if call.method == "GET":
        ids = [i for i in call.params.get("ids", "").split(",") if i]
        fields = [f for f in call.params.get("fields", "").split(",") if f]
    else:
        body = call.json_object()
        ids, fields = _strings(body.get("ids")), _strings(body.get("fields"))
    if not ids or not fields:
        raise ApiError(400, "MISSING_ARGUMENT", "ids and fields are required")
    return _retrieve(call, sobject, ids, fields)


def collections_resource(call: Call) -> Reply:
    """Answer one ``composite/sobjects[/...]`` call (``call.parts`` starts with ``composite, sobjects``)."""
    rest, method = call.parts[2:], call.method
    if not rest and method == "POST":
        return _run(call, _create, *_records(call), upsert=False)
    if not rest and method == "PATCH":
        return _run(call, _update, *_records(call), upsert=False)
    if not rest and method == "DELETE":
        ids = [i for i in call.params.get("ids", "").split(",") if i]
        return _run(call, _delete, ids, flag(call.params.get("allOrNone", False)), upsert=False)
    if len(rest) == 2 and method == "PATCH":
        return _upsert(call, *rest)
    if len(rest) == 1 and method in ("GET", "POST"):
        sobject = lookup_object(rest[0])
        if sobject is None:
            raise not_found()
        return _retrieve_request(call, sobject)
    raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed here")
