"""Routes of ``/services/data/v{version}/jobs/``: Bulk API 2.0 query jobs and ingest jobs.

Every request here is an ordinary counted API call (the app meters them before routing); the job model is in
``bulk_jobs`` and ``bulk_ingest``, the CSV dialect in ``bulk_csv``.
"""

from __future__ import annotations

from typing import Any

from emulator.bulk_csv import DELIMITERS, LINE_ENDINGS
from emulator.bulk_ingest import OPERATIONS, IngestJob
from emulator.bulk_jobs import TERMINAL, BulkJobs, Job, QueryJob, csv_value, decode_locator, invalid_state
from emulator.call import Call, Reply, method_not_allowed
from emulator.errors import ApiError, not_found
from emulator.schema import lookup_object
from emulator.soql import compile_query

__all__ = ["route"]

DEFAULT_MAX_RECORDS = 50_000
LIST_PAGE = 1000
# The first API version of each kind of job: ingest in 41.0, query in 47.0.
SINCE = {"ingest": 41.0, "query": 47.0}
_CSV = "text/csv"
# How Salesforce names a state in "Aborting already Completed Job not allowed".
_DONE = {"JobComplete": "Completed", "Aborted": "Aborted", "Failed": "Failed", "UploadComplete": "Closed",
         "InProgress": "Closed"}
_NOT_TERMINATED = ApiError(400, "API_ERROR", "Error encountered when deleting the job because the job is not "
                                             "terminated")


def _api_error(message: str) -> ApiError:
    return ApiError(400, "API_ERROR", message)


def _enum(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None) -> str:
    value = body.get(name, default)
    if value not in allowed:
        if value is None:
            raise _api_error(f"{name} is required")
        raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {name} from VALUE_STRING "
                                                 f"value {value!r}: expected one of {', '.join(allowed)}")
    return str(value)


def _job_options(call: Call, body: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """The job fields every create takes: operation and the CSV settings (contentType is always CSV)."""
    _enum(body, "contentType", ("CSV",), "CSV")
    return {"operation": _enum(body, "operation", operations, None), "version": call.version,
            "column_delimiter": _enum(body, "columnDelimiter", tuple(DELIMITERS), "COMMA"),
            "line_ending": _enum(body, "lineEnding", tuple(LINE_ENDINGS), "LF"), "now": call.org.bulk.clock()}


def _create_query(call: Call, bulk: BulkJobs) -> Reply:
    body = call.json_object()
    options = _job_options(call, body, ("query", "queryAll"))
    text = body.get("query")
    if not isinstance(text, str) or not text.strip():
        raise _api_error("query is required")
    query = compile_query(text)
    if query.count:
        raise _api_error("Aggregate queries such as COUNT() are not supported by Bulk API 2.0 query jobs")
    jobs, storage = bulk.budgets.query_jobs, bulk.budgets.query_storage_kb
    if jobs.used >= jobs.max:
        raise ApiError(400, "LIMIT_EXCEEDED", f"Max bulk v2 query jobs ({jobs.max}) per 24 hrs has been reached "
                                              f"({jobs.used + 1})")
    if storage.used >= storage.max:
        raise ApiError(400, "LIMIT_EXCEEDED", f"Max bulk v2 query result size stored ({storage.max}) kb per 24 hrs "
                                              "has been exceeded")
    jobs.add()
    # The query runs now; processing then releases its rows at the org's rate.
    records = bulk.store.scan(query.sobject.name, include_deleted=options["operation"] == "queryAll")
    rows = [[csv_value(row[name]) for name in query.fields] for row in query.run(records, call.version)]
    job = QueryJob(bulk.new_id(), header=list(query.fields), rows=rows, sobject=query.sobject.name, **options)
    bulk.add(job)
    bulk.doom_if_asked(job)
    bulk.queue(job, len(rows))
    return Reply(200, job.summary())


def _create_ingest(call: Call, bulk: BulkJobs) -> Reply:
    body = call.json_object()
    options = _job_options(call, body, (*OPERATIONS, "hardDelete"))
    if options["operation"] == "hardDelete":
        raise ApiError(400, "FEATURENOTENABLED", "hardDelete needs the Bulk API Hard Delete permission, which the "
                                                 "emulator's integration user does not have")
    name = body.get("object")
    sobject = lookup_object(name) if isinstance(name, str) else None
    if sobject is None:
        raise _api_error(f"Entity '{name}' is not supported by the Bulk API." if name else "object is required")
    external = body.get("externalIdFieldName")
    field = sobject.field(external) if isinstance(external, str) else None
    if options["operation"] != "upsert" and external is not None:
        raise _api_error("externalIdFieldName is only valid for upsert operations")
    if options["operation"] == "upsert" and (field is None or not (field.external_id or field.name == "Id")):
        raise _api_error(f"Field {external} is not an external ID field of {sobject.name}" if external
                         else "externalIdFieldName is required for upsert operations")
    job = IngestJob(bulk.new_id(), store=bulk.store, sobject=sobject,
                    external_id=field.name if field is not None else None, **options)
    bulk.add(job)
    return Reply(200, job.summary())


def _listing(call: Call, bulk: BulkJobs, kind: str) -> Reply:
    wanted = call.params.get("jobType")
    jobs = [job for job in bulk.of_kind(kind) if wanted in (None, job.job_type)]
    locator = call.params.get("queryLocator", "0")
    offset = int(locator) if locator.isdigit() else 0
    end = offset + LIST_PAGE
    return Reply(200, {
        "done": end >= len(jobs),
        "records": [{**job.summary(), "jobType": job.job_type} for job in jobs[offset:end]],
        "nextRecordsUrl": f"/services/data/v{call.version}/jobs/{kind}?queryLocator={end}" if end < len(jobs)
        else None,
    })


def _set_state(call: Call, bulk: BulkJobs, job: Job) -> Reply:
    state = call.json_object().get("state")
    if state == "Aborted":
        if job.state in TERMINAL:
            raise invalid_state(f"Aborting already {_DONE[job.state]} Job not allowed")
        if isinstance(job, IngestJob) and job.state == "Open":
            job.parse()
        job.abort(bulk.clock())
    elif state == "UploadComplete" and isinstance(job, IngestJob):
        if job.state != "Open":
            raise invalid_state(f"Closing already {_DONE[job.state]} Job not allowed")
        bulk.queue(job, job.parse())
    else:
        raise invalid_state(f"Invalid state for a {job.kind} job: {state}")
    return Reply(200, job.summary())


def _job(call: Call, bulk: BulkJobs, job: Job) -> Reply:
    if call.method == "GET":
        return Reply(200, job.info())
    if call.method == "PATCH":
        return _set_state(call, bulk, job)
    if call.method == "DELETE":
        deletable = TERMINAL | {"UploadComplete"} if isinstance(job, IngestJob) else TERMINAL
        if job.state not in deletable:
            raise _NOT_TERMINATED
        bulk.remove(job)
        return Reply(204)
    raise method_not_allowed(call, "GET, PATCH, DELETE")


def _results(call: Call, bulk: BulkJobs, job: QueryJob) -> Reply:
    if call.version != job.version:
        raise ApiError(409, "API_ERROR", f"This job was created in API version {job.version}: get its results "
                                         "with the same version")
    if job.state != "JobComplete":
        raise invalid_state(f"Results are available once the job is JobComplete; it is {job.state}")
    text = call.params.get("maxRecords", str(DEFAULT_MAX_RECORDS))
    if not text.isdigit() or int(text) < 1:
        raise _api_error(f"maxRecords must be a positive integer: {text}")
    offset = decode_locator(call.params["locator"]) if "locator" in call.params else 0
    if offset is None or offset > len(job.rows):
        raise ApiError(400, "INVALID_QUERY_LOCATOR", f"invalid locator: {call.params['locator']}")
    # maxRecords is "The maximum number of records to retrieve per set of results" (Get Results for a Query Job):
    # a set may hold fewer, as the org's results cap makes it.
    limit = int(text) if bulk.results_cap is None else min(int(text), bulk.results_cap)
    data, count, locator = job.page(offset, limit)
    return Reply(200, data, {"Sforce-Locator": locator, "Sforce-NumberOfRecords": str(count)}, _CSV)


def _upload(call: Call, job: IngestJob) -> Reply:
    if job.state != "Open":
        raise invalid_state(f"Job data can be uploaded only while the job is Open; it is {job.state}")
    content_type = call.headers.get("content-type", "")
    if not content_type.lower().startswith(_CSV):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {content_type or '(none)'} is not supported: "
                                                      "upload job data as text/csv")
    job.uploads.append(call.body.decode("utf-8", errors="replace"))
    return Reply(201)


def _sub_resource(call: Call, bulk: BulkJobs, job: Job, name: str) -> Reply:
    if isinstance(job, QueryJob) and name == "results":
        if call.method != "GET":
            raise method_not_allowed(call, "GET")
        return _results(call, bulk, job)
    if isinstance(job, IngestJob) and name == "batches":
        if call.method != "PUT":
            raise method_not_allowed(call, "PUT")
        return _upload(call, job)
    if isinstance(job, IngestJob) and name in ("successfulresults", "failedresults", "unprocessedrecords"):
        if call.method != "GET":
            raise method_not_allowed(call, "GET")
        if job.state not in TERMINAL:
            raise invalid_state(f"Results are available once the job is processed; it is {job.state}")
        return Reply(200, job.results(name), content_type=_CSV)
    raise not_found()


def route(call: Call) -> Reply:
    """Answer one ``jobs/...`` call; ApiError becomes its Salesforce error body."""
    try:
        kind, rest = [*call.parts, ""][1], call.parts[2:]
        if kind not in SINCE or float(call.version) < SINCE[kind]:
            raise not_found()
        bulk = call.org.bulk
        if not rest:
            if call.method == "POST":
                return _create_query(call, bulk) if kind == "query" else _create_ingest(call, bulk)
            if call.method == "GET":
                return _listing(call, bulk, kind)
            raise method_not_allowed(call, "GET, POST")
        job = bulk.get(kind, rest[0])
        if len(rest) == 1:
            return _job(call, bulk, job)
        if len(rest) == 2:
            # Salesforce's own pages spell it both unprocessedrecords and unprocessedRecords.
            return _sub_resource(call, bulk, job, rest[1].lower())
        raise not_found()
    except ApiError as error:
        return Reply(error.status, error.body())
