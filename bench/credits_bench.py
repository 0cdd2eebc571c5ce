"""Credits to push and to pull 100,000 records, through real ``crmsync worker`` processes and the emulator.

The org starts empty: the push upserts 100,000 Leads (which is also the cheap way to seed them: creating
them through the REST API takes seconds, seeding six objects of 100,000 in the emulator half a minute), then
the pull reads them back. Each figure is set against the naive cost (one request per record) and the REST
minimum (``ceil(N/200)`` sObject Collections calls, ``ceil(N/2000)`` query pages); the emulator's own count of
the tenant's requests is printed next to the credits charged, which it must equal.
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
COLLECTION_SIZE = 200  # sObject Collections: at most 200 records a request
QUERY_PAGE = 2_000  # Salesforce's default (and largest) query batch
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


def _report(what: str, n: int, m: Measured, minimum: int, minimum_label: str) -> None:
    row(f"{what} {n:,} Leads: credits charged", f"{m.credits:,}",
        f"{m.seconds:.1f} s, {m.records:,} records; the job recorded {m.job_credits:,} credits")
    row("  naive: one request per record", f"{n:,}", f"{n / max(m.credits, 1):,.0f}x the credits charged")
    row(f"  REST minimum: {minimum_label}", f"{minimum:,}", f"charged / minimum = {m.credits / minimum:.2f}")
    verdict = "equal" if m.requests == m.credits else "DIFFERENT"
    row("  emulator's count of the tenant's requests", f"{m.requests:,}", f"{verdict} to credits charged")


def main(n: int = RECORDS) -> None:
    """Print the credits a 100,000-record push and pull cost, with their references."""
    with worker_stack() as stack:
        tenant = stack.tenant("credits", records=0, limit=1_000_000)
        records: list[dict[str, object]] = [
            {"External_Id__c": f"BENCH-{i:06d}", "LastName": f"Lead {i}", "Company": "Bench", "Status": "Open"}
            for i in range(n)
        ]
        print(f"credits per {n:,} records (real `crmsync worker --processes 2 --threads 4`, emulator org "
              "starting empty)")
        with stack.workers() as pool:
            push = _measure(stack, tenant, lambda: enqueue_push(stack.client, tenant.name, "Lead", records,
                                                                "External_Id__c"), pool)
            _report("push (upsert)", n, push, math.ceil(n / COLLECTION_SIZE), f"ceil(N/{COLLECTION_SIZE}) calls")
            pull = _measure(stack, tenant, lambda: enqueue_pull(stack.client, tenant.name, "Lead"), pool)
            _report("pull", n, pull, math.ceil(n / QUERY_PAGE), f"ceil(N/{QUERY_PAGE:,}) query pages")


if __name__ == "__main__":
    main()
