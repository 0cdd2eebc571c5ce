"""Seconds from a limit raise, and from a reset, to the first resumed Salesforce request.

Real ``crmsync worker`` processes (2 x 4; their resumer ticks every 0.2 s). A tenant's jobs are parked by
emptying its bucket (one ``take`` of everything left) and queueing a pull, which runs dry and parks. Then:

- raise: ``CreditBucket.set_limit`` to the limit plus 100,000 (what ``crmsync quota set`` does); the clock
  starts right before the call;
- reset: the tenants' reset time of day was set with their first limit to the next whole minute UTC at least
  ``RESET_LEAD_S`` away (set before the first take, it applies to the first window); the clock starts at
  that instant, when Redis's own clock opens the new window.

The clock stops at the ``time`` of the first counted request in the emulator's log (the emulator runs in this
process, on the same clock). The workers are idle before each event, so Dramatiq's consumers have backed off
to their idle poll (``dramatiq_worker_timeout``, 1 s by default), as on a quiet pool.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from bench.common import row
from bench.stack import BenchTenant, Stack, WorkerPool, worker_stack
from worker.enqueue import enqueue_pull
from worker.jobs.parking import PauseStore

TARGET_S = 1.0
RAISE_SAMPLES = 5
RESET_TENANTS = 3
RESET_LEAD_S = 10  # time to connect, warm and park the tenants before the reset instant
IDLE_BEFORE_S = 2.5  # long enough for every idle Dramatiq consumer to back off to its longest poll
OBJECTS = ("Lead", "Contact", "Account", "Opportunity", "Campaign", "Case")


def _park(stack: Stack, pool: WorkerPool, tenant: BenchTenant, sobject: str) -> str:
    """Empty the tenant's bucket and queue a pull that parks; return its job id."""
    remaining = stack.bucket.status(tenant.name).remaining
    if remaining:
        assert stack.bucket.take(tenant.name, remaining).granted
    job_id = enqueue_pull(stack.client, tenant.name, sobject)
    record = stack.wait_jobs([(tenant.name, job_id)], until=frozenset({"parked", "done", "failed"}), timeout=60,
                             pool=pool)[tenant.name, job_id]
    if record.state != "parked" or PauseStore(stack.client).get(tenant.name) is None:
        raise RuntimeError(f"the job did not park: {record.state} {record.error}")
    return job_id


def _first_request_after(stack: Stack, pool: WorkerPool, tenant: BenchTenant, job_id: str, since: float) -> float:
    """Wait for the resumed job to finish; return the time of the first counted request at or after ``since``."""
    stack.wait_jobs([(tenant.name, job_id)], until=frozenset({"done"}), timeout=120, pool=pool)
    times: list[float] = [e["time"] for e in stack.emulator.control.request_log(tenant.org.name)
             if e.get("counted") and e["time"] >= since]
    if not times:
        raise RuntimeError("the resumed job made no request")
    return min(times)


def _warm(stack: Stack, pool: WorkerPool, tenants: list[BenchTenant]) -> None:
    """One pull per tenant, so tokens are fetched and worker processes warm before anything is timed."""
    jobs = [(t.name, enqueue_pull(stack.client, t.name, "Lead")) for t in tenants]
    stack.wait_jobs(jobs, until=frozenset({"done"}), timeout=120, pool=pool)


def _raise_delays(stack: Stack, pool: WorkerPool) -> list[float]:
    tenant = stack.tenant("raise", limit=100_000)
    _warm(stack, pool, [tenant])
    delays = []
    for i in range(RAISE_SAMPLES):
        job_id = _park(stack, pool, tenant, OBJECTS[(i + 1) % len(OBJECTS)])
        time.sleep(IDLE_BEFORE_S)
        limit = stack.bucket.status(tenant.name).limit or 0
        raised_at = time.time()
        stack.bucket.set_limit(tenant.name, limit + 100_000, actor="bench")
        delays.append(_first_request_after(stack, pool, tenant, job_id, raised_at) - raised_at)
    return delays


def _next_reset(lead: float) -> datetime:
    """The next whole minute UTC at least ``lead`` seconds from now."""
    now = time.time()
    return datetime.fromtimestamp((int(now + lead) // 60 + 1) * 60, tz=UTC)


def _reset_delays(stack: Stack, pool: WorkerPool) -> tuple[datetime, list[float]]:
    reset = _next_reset(RESET_LEAD_S)
    tenants = [stack.tenant(f"reset-{i}", limit=100_000, reset_at=reset.strftime("%H:%M"))
               for i in range(RESET_TENANTS)]
    _warm(stack, pool, tenants)
    jobs = [_park(stack, pool, tenant, "Contact") for tenant in tenants]
    for tenant in tenants:
        status = stack.bucket.status(tenant.name)
        if status.remaining or status.resets_at != reset:
            raise RuntimeError(f"{tenant.name}: expected an empty bucket resetting at {reset}, got {status}")
    print(f"  (reset: waiting {reset.timestamp() - time.time():.0f} s for {reset:%H:%M} UTC, the reset time of "
          f"day set with the tenants' first limit)")
    delays = [_first_request_after(stack, pool, tenant, job_id, reset.timestamp()) - reset.timestamp()
              for tenant, job_id in zip(tenants, jobs, strict=True)]
    return reset, delays


def main() -> None:
    """Print the delays from a limit raise and from a reset to the first resumed request."""
    with worker_stack() as stack, stack.workers() as pool:
        print("resume latency (real `crmsync worker --processes 2 --threads 4`, resumer tick 0.2 s; from the event "
              "to the first counted request in the emulator's log)")
        raised = _raise_delays(stack, pool)
        verdict = "ok" if max(raised) <= TARGET_S else "BELOW TARGET (slower)"
        row(f"limit raise -> first request, median of {len(raised)}", f"{statistics.median(raised):.3f} s",
            f"max {max(raised):.3f} s (target <= {TARGET_S:.0f} s) {verdict}; all: "
            + ", ".join(f"{d:.3f}" for d in raised))
        _, reset = _reset_delays(stack, pool)
        verdict = "ok" if max(reset) <= TARGET_S else "BELOW TARGET (slower)"
        row(f"reset -> first request, {len(reset)} tenants", f"{max(reset):.3f} s",
            f"slowest tenant (target <= {TARGET_S:.0f} s) {verdict}; all: " + ", ".join(f"{d:.3f}" for d in reset))


if __name__ == "__main__":
    main()
