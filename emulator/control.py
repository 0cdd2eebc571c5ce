"""The control handle: request logs, usage, limits, bulk budgets, tokens, orgs and faults, for tests and demos."""

from __future__ import annotations

from typing import Any

from emulator.bulk_jobs import DEFAULT_BULK_RATE, QUERY_FAILURE
from emulator.cursors import CURSOR_LIFETIME, CursorPolicy
from emulator.orgs import Environment, OrgInfo
from emulator.registry import Registry

__all__ = ["ADMIN_METHODS", "Control"]

# The methods the admin HTTP path exposes; AdminClient mirrors exactly these.
ADMIN_METHODS = frozenset({
    "orgs", "add_org", "remove_org", "request_log", "request_counts", "clear_log", "usage", "set_usage",
    "set_limit", "expire_tokens", "issue_token", "set_faults", "inject_fault", "clear_faults", "bulk_usage",
    "set_bulk_limits", "set_bulk_rate", "set_api_overdraft", "set_limit_info", "set_query_cursors", "query_cursors",
    "set_page_cap", "fail_query_job", "set_bulk_results_cap",
})


class Control:
    """Thread-safe control of a running emulator (``EmulatorServer.control``)."""

    def __init__(self, registry: Registry, bulk_rate: float = DEFAULT_BULK_RATE) -> None:
        if bulk_rate < 0:
            raise ValueError("bulk_rate must be >= 0 (0 processes bulk jobs at once)")
        self._registry = registry
        self._bulk_rate = bulk_rate

    def orgs(self) -> dict[str, OrgInfo]:
        """Every org by name, with its current ready access token."""
        with self._registry.lock:
            return {n: o.info(self._registry.base_url) for n, o in self._registry.orgs.items()}

    def add_org(self, name: str, environment: Environment = "production", records: int | None = None,
                daily_limit: int | None = None) -> OrgInfo:
        """Create a seeded org (``environment`` is ``production`` or ``sandbox``)."""
        with self._registry.lock:
            org = self._registry.add_org(name, environment, records, daily_limit)
            org.bulk.rate = self._bulk_rate
            return org.info(self._registry.base_url)

    def remove_org(self, name: str) -> None:
        """Delete an org; its tokens answer 401 from now on."""
        with self._registry.lock:
            self._registry.remove_org(name)

    def request_log(self, org: str) -> list[dict[str, Any]]:
        """The org's latest requests, oldest first: time, method, path, query, status, counted, fault, ..."""
        with self._registry.lock:
            return [dict(entry) for entry in self._registry.org(org).log]

    def request_counts(self, org: str) -> dict[str, int]:
        """How many requests the org made, by ``"METHOD /path"`` (query string left out)."""
        with self._registry.lock:
            return dict(self._registry.org(org).counts)

    def clear_log(self, org: str) -> None:
        """Empty the org's request log and counts (its usage is untouched)."""
        with self._registry.lock:
            state = self._registry.org(org)
            state.log.clear()
            state.counts.clear()

    def usage(self, org: str) -> dict[str, int]:
        """``{"used", "max"}``: counted requests in the rolling 24 hours and the daily limit."""
        with self._registry.lock:
            window = self._registry.org(org).usage
            return {"used": window.used, "max": window.max}

    def set_usage(self, org: str, used: int) -> None:
        """Replace the window's content with ``used`` requests made now."""
        if used < 0:
            raise ValueError("used must be >= 0")
        with self._registry.lock:
            self._registry.org(org).usage.set_used(used)

    def set_limit(self, org: str, max_requests: int) -> None:
        """Change the org's daily API request limit."""
        if max_requests < 0:
            raise ValueError("max_requests must be >= 0")
        with self._registry.lock:
            self._registry.org(org).usage.max = max_requests

    def set_api_overdraft(self, org: str, requests: int) -> None:
        """Serve ``requests`` more past the daily max before the 403 (usage then shows above the max)."""
        with self._registry.lock:
            self._registry.org(org).usage.set_overdraft(requests)

    def set_limit_info(self, org: str, app_name: str | None = None, app_max: int | None = None,
                       extra_parts: list[str] | None = None) -> None:
        """Add ``per-app-api-usage`` (a connected app quota, counted from now) and ``extra_parts`` to the
        ``Sforce-Limit-Info`` header of the org's responses; with no arguments only ``api-usage`` remains."""
        with self._registry.lock:
            self._registry.org(org).usage.set_reporting(app_name, app_max, extra_parts or ())

    def set_query_cursors(self, org: str, limit: int | None = None, idle_timeout: float | None = None,
                          lifetime: float = CURSOR_LIFETIME) -> None:
        """Replace the org's cursor policy: at most ``limit`` open (None: no limit), expiring ``idle_timeout``
        seconds after their last use (None: never idle) and ``lifetime`` seconds after their query."""
        policy = CursorPolicy(limit, idle_timeout, lifetime)
        with self._registry.lock:
            self._registry.org(org).cursors.policy = policy

    def query_cursors(self, org: str) -> int:
        """How many query cursors of the org are open (neither released nor expired)."""
        with self._registry.lock:
            return len(self._registry.org(org).cursors)

    def set_page_cap(self, org: str, records: int | None) -> None:
        """At most ``records`` per query page whatever the batch size, as Salesforce may do for big or complex
        records (None: only the documented rules)."""
        if records is not None and records < 1:
            raise ValueError("records must be >= 1 (None for no cap)")
        with self._registry.lock:
            self._registry.org(org).page_cap = records

    def expire_tokens(self, org: str) -> None:
        """End the org's access tokens: their next request answers 401 INVALID_SESSION_ID."""
        with self._registry.lock:
            self._registry.expire_tokens(org)

    def issue_token(self, org: str) -> str:
        """A fresh access token for the org (also its new ready ``access_token``)."""
        with self._registry.lock:
            return self._registry.issue_token(self._registry.org(org))

    def set_faults(self, org: str, *, latency: float = 0.0, error_rate: float = 0.0, error_status: int = 503,
                   drop_rate: float = 0.0, concurrent_limit_rate: float = 0.0, seed: int = 0) -> None:
        """Seeded random faults on every counted request: shares of errors, drops and concurrency refusals."""
        with self._registry.lock:
            self._registry.org(org).faults.set_rates(
                latency=latency, error_rate=error_rate, error_status=error_status, drop_rate=drop_rate,
                concurrent_limit_rate=concurrent_limit_rate, seed=seed,
            )

    def inject_fault(self, org: str, kind: str, count: int = 1, latency: float = 0.0) -> None:
        """The next ``count`` counted requests get ``kind``: latency, http500, http503, drop, concurrent_limit."""
        with self._registry.lock:
            self._registry.org(org).faults.inject(kind, count, latency)

    def clear_faults(self, org: str) -> None:
        """Drop injected faults and zero the random shares."""
        with self._registry.lock:
            self._registry.org(org).faults.clear()

    def bulk_usage(self, org: str) -> dict[str, dict[str, int]]:
        """``{"batches", "query_jobs", "query_storage_mb"}``, each ``{"used", "max"}`` over the rolling 24 hours."""
        with self._registry.lock:
            state = self._registry.org(org)
            state.bulk.advance()
            return state.bulk.budgets.usage()

    def set_bulk_limits(self, org: str, batches: int | None = None, query_jobs: int | None = None,
                        query_storage_mb: int | None = None) -> None:
        """Change the org's bulk budgets: batches, query jobs, query result storage (MB); None keeps one."""
        with self._registry.lock:
            self._registry.org(org).bulk.budgets.set_max(batches=batches, query_jobs=query_jobs,
                                                         query_storage_mb=query_storage_mb)

    def set_bulk_rate(self, org: str, records_per_second: float, running: bool = False) -> None:
        """How fast the org's bulk jobs closed from now on are processed; 0 processes them at once. With
        ``running``, jobs already queued or running go on at that rate too, from what they have processed."""
        if records_per_second < 0:
            raise ValueError("records_per_second must be >= 0 (0 processes bulk jobs at once)")
        with self._registry.lock:
            self._registry.org(org).bulk.set_rate(float(records_per_second), running=running)

    def fail_query_job(self, org: str, job_id: str | None = None, message: str = QUERY_FAILURE) -> None:
        """The query job ``job_id`` (queued or running), or with no id the org's next query job created, ends
        ``Failed`` at its next step, its job info carrying ``errorMessage``; each call without an id fails one
        more of the next jobs. KeyError for an unknown job, ValueError for one already finished."""
        if not message:
            raise ValueError("message must be a non-empty errorMessage")
        with self._registry.lock:
            bulk = self._registry.org(org).bulk
            bulk.advance()
            bulk.fail_query(job_id, message)

    def set_bulk_results_cap(self, org: str, records: int | None) -> None:
        """At most ``records`` per set of a query job's results whatever ``maxRecords`` asks, as Salesforce's
        size limits may make a set smaller (None: ``maxRecords`` alone)."""
        if records is not None and records < 1:
            raise ValueError("records must be >= 1 (None for no cap)")
        with self._registry.lock:
            self._registry.org(org).bulk.results_cap = records
