"""A ``MeteringObserver`` that counts every metered Salesforce request in the worker instruments.

Every label is bounded, whatever the request: the API is ``bulk`` for Bulk API 2.0 (``/jobs/...`` after the
version in the path) and ``rest`` for anything else, the method is one of a fixed set (else ``OTHER``), the
outcome an exact HTTP status from a fixed set, its class (``2xx`` .. ``5xx``), ``connection_error``,
``not_sent`` or ``other``, and the object one of an allowlist of standard objects plus those configured in
``CRMSYNC_METRICS_OBJECTS`` (else ``other``; ``none`` when the request names no object, e.g. ``/limits``).

The object comes from ``event.sobject`` when the event carries one (the session knows its job's object),
else from the URL: ``sobjects/X``, ``composite/sobjects/X`` or the outer ``FROM X`` of a query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

import structlog

from worker.metrics.instruments import API_REQUEST_DURATION, API_REQUESTS, CREDITS_CHARGED, CREDITS_REFUNDED
from worker.salesforce.session import RequestEvent
from worker.settings import metrics_objects

__all__ = [
    "EXACT_STATUSES",
    "METHODS",
    "STANDARD_OBJECTS",
    "MetricsObserver",
    "api_label",
    "method_label",
    "object_from_url",
    "outcome_label",
]

log = structlog.get_logger("crmsync.metrics")

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: Statuses worth telling apart (Salesforce's documented ones); any other is reported by its class.
EXACT_STATUSES = frozenset({200, 201, 204, 300, 304, 400, 401, 403, 404, 405, 409, 412, 414, 415, 420, 428,
                            429, 431, 500, 502, 503, 504})
STANDARD_OBJECTS = ("Account", "Asset", "Campaign", "CampaignMember", "Case", "Contact", "Contract", "Event",
                    "Lead", "Opportunity", "OpportunityLineItem", "Order", "OrderItem", "Pricebook2",
                    "PricebookEntry", "Product2", "Quote", "Task", "User")
#: Names a session may carry that are no sObject (``Runtime.probe_org`` labels its ``/limits`` call so).
_NOT_OBJECTS = frozenset({"", "limits", "versions"})
_MAX_OBJECTS = 200  # configured objects beyond this are ignored: a label must stay bounded
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
_REST_PATH = re.compile(r"^/services/data/v\d+\.\d+/(.*)$")
_SUBQUERY = re.compile(r"\([^()]*\)")
_FROM = re.compile(r"\bFROM\s+([A-Za-z][A-Za-z0-9_]*)", re.IGNORECASE)


def api_label(url: str) -> str:
    """``bulk`` for a Bulk API 2.0 request (its path goes on with ``jobs/`` after the version), else ``rest``."""
    match = _REST_PATH.match(urlsplit(url).path)
    return "bulk" if match and match.group(1).startswith("jobs/") else "rest"


def method_label(method: str) -> str:
    """The HTTP method upper-cased if it is a known one, else ``OTHER``."""
    upper = method.upper()
    return upper if upper in METHODS else "OTHER"


def outcome_label(outcome: str) -> str:
    """A bounded outcome: an exact known status, a status class, ``connection_error``, ``not_sent`` or ``other``."""
    if outcome in {"connection_error", "not_sent"}:
        return outcome
    if len(outcome) == 3 and outcome.isascii() and outcome.isdigit():
        status = int(outcome)
        if status in EXACT_STATUSES:
            return outcome
        if 100 <= status <= 599:
            return f"{outcome[0]}xx"
    return "other"


def object_from_url(url: str) -> str | None:
    """The sObject a REST URL is about, as written in it, or ``None`` when it names none (or is unreadable)."""
    parts = urlsplit(url)
    match = _REST_PATH.match(parts.path)
    if not match:
        return None
    segments = [s for s in match.group(1).split("/") if s]
    if segments[:1] == ["sobjects"] and len(segments) > 1:
        return segments[1]
    if segments[:2] == ["composite", "sobjects"] and len(segments) > 2:
        return segments[2]
    if segments[:1] in (["query"], ["queryAll"]) and len(segments) == 1:
        soql = " ".join(parse_qs(parts.query).get("q", []))
        previous = None
        while previous != soql:  # drop parenthesised subqueries, innermost first, to find the outer FROM
            previous, soql = soql, _SUBQUERY.sub(" ", soql)
        found = _FROM.search(soql)
        return found.group(1) if found else None
    return None


class MetricsObserver:
    """Counts each metered request: requests (by API, object, method and outcome), duration, credits charged and
    refunded.

    Every event stands for one credit taken (a refused take raises before any request, so it makes no
    event); ``not_sent`` means it went back. So ``crmsync_credits_charged_total`` counts takes and the net
    spend is charged minus refunded, as in the bucket. A fault here is logged, never raised into the job.
    """

    def __init__(self, objects: Iterable[str] = ()) -> None:
        allowed = list(STANDARD_OBJECTS)
        allowed += [name for name in objects if _API_NAME.fullmatch(name)][:_MAX_OBJECTS]
        # Salesforce names are case-insensitive: "lead" in a query is the Lead object.
        self._objects = {name.lower(): name for name in allowed}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetricsObserver:
        """An observer that also names the objects in ``CRMSYNC_METRICS_OBJECTS`` (comma-separated)."""
        return cls(metrics_objects(environ))

    def object_label(self, name: str | None) -> str:
        """The object label: an allowed name in its canonical case, ``other``, or ``none`` when there is none."""
        if not name or name.lower() in _NOT_OBJECTS:
            return "none"
        return self._objects.get(name.lower(), "other")

    def after_request(self, event: RequestEvent) -> None:
        """Count ``event``; never raises."""
        try:
            # The session knows the job's object; requests outside a job (a /limits probe) are named by URL.
            name = event.sobject or object_from_url(event.url)
            method = method_label(event.method)
            outcome = outcome_label(event.outcome)
            API_REQUESTS.labels(api=api_label(event.url), object=self.object_label(name), method=method,
                                outcome=outcome).inc()
            CREDITS_CHARGED.inc()
            if outcome == "not_sent":
                CREDITS_REFUNDED.inc()
            else:  # a request that never left took no time at Salesforce worth a duration
                API_REQUEST_DURATION.labels(method).observe(max(0.0, event.seconds))
        except Exception as exc:  # metrics must never fail a job
            log.warning("request_metrics_failed", error=f"{type(exc).__name__}: {exc}")
