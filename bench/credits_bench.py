"""Credits to push and to pull 100,000 records by REST and by Bulk API 2.0, through real ``crmsync worker``
processes and the emulator.

The org starts empty: the push upserts 100,000 Leads (which is also the cheap way to seed them: creating
them through the REST API takes seconds, seeding six objects of 100,000 in the emulator half a minute), then
the pull reads them back. The REST path (``CRMSYNC_BULK=never``) runs beside the Bulk path (``auto``) in the same
run, each on its own org; beside the REST pull of the default fields, a REST pull of as many Leads selecting two
long text fields, which Salesforce pages by 200 (the emulator follows that rule); then a 500-record push and pull,
which ``auto`` keeps on REST. Each figure, with its credits per record, is set against its reference (the naive
cost, one request per record, and the REST minimum: ``ceil(N/200)`` sObject Collections calls, ``ceil(N/2000)``
query pages, ``ceil(N/200)`` with two long text fields); the emulator's own count of the tenant's requests, polls
included, is printed next to the credits charged, which it must equal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import row
from bench.stack import BenchTenant, Stack, WorkerPool, worker_stack
from worker.enqueue import enqueue_pull, enqueue_push
from worker.jobs.state import TERMINAL

RECORDS = 100_000
SMALL = 500
COLLECTION_SIZE = 200  # sObject Collections: at most 200 records a request
QUERY_PAGE = 2_000  # Salesforce's default (and largest) query batch
LONG_TEXT_PAGE = 200  # Salesforce's largest query batch when two or more long text fields are selected
LONG_TEXT = ("Notes__c", "Profile__c")  # the emulator's two long text areas on Lead
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Measured:
    """One job's cost as the bucket, the job record and the emulator each saw it."""

    credits: int  # used credits in the tenant's bucket, after minus before
    job_credits: int  # the credits the job recorded for itself
    requests: int  # requests the emulator counted for the tenant's org
    seconds: float
    records: int


def _measure(stack: Stack, tenant: BenchTenant, enqueue: Callable[[], str], pool: WorkerPool) -> Measured:
    """Run one job to its end and measure what it cost."""
    credits_before, requests_before = tenant.used_credits(), tenant.counted_requests()
    started = time.perf_counter()
    job_id = enqueue()
    record = stack.wait_jobs([(tenant.name, job_id)], until=TERMINAL, timeout=TIMEOUT_S, pool=pool)[tenant.name, job_id]
    seconds = time.perf_counter() - started
    if record.state != "done":
        raise RuntimeError(f"job ended {record.state}: {record.error}")
    return Measured(tenant.used_credits() - credits_before, record.credits,
                    tenant.counted_requests() - requests_before, seconds, record.records)


def _report(what: str, n: int, m: Measured, reference: str) -> None:
    row(f"{what}: credits charged", f"{m.credits:,}",
        f"{m.seconds:.1f} s, {m.records:,} records; the job recorded {m.job_credits:,} credits; {reference}")
    row("  credits per record", f"{m.credits / max(n, 1):.5f}", what)
    verdict = "equal" if m.requests == m.credits else "DIFFERENT"
    row("  emulator's count of the tenant's requests", f"{m.requests:,}", f"{verdict} to credits charged")


def _records(n: int, prefix: str) -> list[dict[str, object]]:
    return [{"External_Id__c": f"{prefix}-{i:06d}", "LastName": f"Lead {i}", "Company": "Bench", "Status": "Open"}
            for i in range(n)]


def _push_then_pull(stack: Stack, pool: WorkerPool, tenant: BenchTenant, n: int,
                    fields: tuple[str, ...] = ()) -> tuple[Measured, Measured]:
    """Push ``n`` Leads into the tenant's empty org, then pull them back selecting ``fields`` too."""
    records = _records(n, tenant.name)
    push = _measure(stack, tenant, lambda: enqueue_push(stack.client, tenant.name, "Lead", records,
                                                        "External_Id__c"), pool)
    pull = _measure(stack, tenant, lambda: enqueue_pull(stack.client, tenant.name, "Lead", fields), pool)
    return push, pull


def main(n: int = RECORDS, small: int = SMALL) -> None:
    """Print what a 100,000-record push and pull cost by REST and by Bulk API 2.0, and what small jobs cost."""
    print(f"credits per {n:,} records, REST path (CRMSYNC_BULK=never) beside the Bulk API 2.0 path (auto), "
          "real `crmsync worker --processes 2 --threads 4`, each on an emulator org starting empty; the emulator "
          "processes Bulk jobs at 5,000 records/s and the worker polls at 2, 10, 30, 60 s")
    naive = f"naive {n:,}"
    with worker_stack() as stack:
        with stack.workers(extra_env={"CRMSYNC_BULK": "never"}) as pool:
            rest_push, rest_pull = _push_then_pull(stack, pool, stack.tenant("rest", records=0), n)
            _, long_pull = _push_then_pull(stack, pool, stack.tenant("longtext", records=0), n, LONG_TEXT)
        with stack.workers(extra_env={"CRMSYNC_BULK": "auto"}) as pool:
            bulk_push, bulk_pull = _push_then_pull(stack, pool, stack.tenant("bulk", records=0), n)
            small_push, small_pull = _push_then_pull(stack, pool, stack.tenant("small", records=0), small)
    _report(f"push (upsert) {n:,} Leads, REST", n, rest_push,
            f"{naive}; REST minimum ceil(N/{COLLECTION_SIZE}) = {math.ceil(n / COLLECTION_SIZE):,}")
    _report(f"push (upsert) {n:,} Leads, Bulk", n, bulk_push,
            f"{rest_push.credits / max(bulk_push.credits, 1):,.0f}x fewer than REST; target <= 10")
    _report(f"pull {n:,} Leads, REST, default fields", n, rest_pull,
            f"{naive}; REST minimum ceil(N/{QUERY_PAGE:,}) = {math.ceil(n / QUERY_PAGE):,}")
    _report(f"pull {n:,} Leads, REST, two long text fields", n, long_pull,
            f"{naive}; pages of {LONG_TEXT_PAGE}: ceil(N/{LONG_TEXT_PAGE}) = {math.ceil(n / LONG_TEXT_PAGE):,}")
    _report(f"pull {n:,} Leads, Bulk, default fields", n, bulk_pull,
            f"{rest_pull.credits / max(bulk_pull.credits, 1):,.0f}x fewer than REST; target <= 8")
    _report(f"push {small:,} Leads (auto stays on REST)", small, small_push,
            f"REST ceil(N/{COLLECTION_SIZE}) = {math.ceil(small / COLLECTION_SIZE)}")
    _report(f"pull {small:,} Leads (auto stays on REST)", small, small_pull, "REST: one page = 1")


if __name__ == "__main__":
    main()
