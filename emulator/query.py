"""``query`` and ``queryAll``: SOQL results in pages of "up to" the batch size, behind server-side cursors.

A page holds at most the smallest of: the batch size asked for in ``Sforce-Query-Options`` (200 to 2,000, by
default 2,000), 200 when the query selects two or more custom long text areas, and the org's page cap, which
stands for Salesforce shortening pages "based on the size and complexity of records queried".
"""

from __future__ import annotations

import re
from typing import Any

from emulator.call import Call, Reply, method_not_allowed
from emulator.cursors import invalid_locator
from emulator.errors import malformed_query, not_found
from emulator.soql import Query, compile_query

__all__ = ["DEFAULT_BATCH", "LONG_TEXT_BATCH", "MIN_BATCH", "query_resource"]

DEFAULT_BATCH = 2000
MIN_BATCH = 200
LONG_TEXT_BATCH = 200
_BATCH_OPTION = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


def _page_size(call: Call, query: Query) -> int:
    """How many records the page answering this request holds at most (the batch size is read per request)."""
    match = _BATCH_OPTION.search(call.headers.get("sforce-query-options", ""))
    size = min(max(int(match.group(1)), MIN_BATCH), DEFAULT_BATCH) if match else DEFAULT_BATCH
    if query.long_text_fields >= 2:
        size = min(size, LONG_TEXT_BATCH)
    if call.org.page_cap is not None:
        size = min(size, call.org.page_cap)
    return size


def _page(call: Call, locator: str, rows: list[dict[str, Any]], offset: int, size: int) -> Reply:
    end = offset + size
    body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
    if end < len(rows):
        # queryAll's next pages are named under /query/ as well; either resource answers them.
        body["nextRecordsUrl"] = f"/services/data/v{call.version}/query/{locator}-{end}"
    body["records"] = rows[offset:end]
    return Reply(200, body)


def _more(call: Call, name: str) -> Reply:
    locator, _, offset = name.rpartition("-")
    rows, query = call.org.cursors.get(locator)
    if not offset.isdigit() or int(offset) > len(rows):
        raise invalid_locator()
    return _page(call, locator, rows, int(offset), _page_size(call, query))


def _run(call: Call, resource: str) -> Reply:
    text = call.params.get("q", "")
    if not text.strip():
        raise malformed_query("A query string has to be specified")
    query = compile_query(text)
    records = call.org.store.scan(query.sobject.name, include_deleted=resource == "queryAll")
    if query.count:
        return Reply(200, {"totalSize": query.matches(records), "done": True, "records": []})
    rows = query.run(records, call.version)
    size = _page_size(call, query)
    locator = call.org.cursors.open(rows, query) if len(rows) > size else ""
    return _page(call, locator, rows, 0, size)


def query_resource(call: Call) -> Reply:
    """Answer ``GET query/?q=``, ``queryAll/?q=`` and their next pages ``query|queryAll/{locator}-{offset}``."""
    if call.method != "GET":
        raise method_not_allowed(call, "GET")
    if len(call.parts) == 1:
        return _run(call, call.parts[0])
    if len(call.parts) == 2:
        return _more(call, call.parts[1])
    raise not_found()
