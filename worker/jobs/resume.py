"""Resuming paused tenants: parked jobs go back into the queue, in their original order, spaced out.

One worker process at a time (by a Redis lease) checks the paused tenants several times a second:
- ``quota_exhausted`` resumes as soon as the bucket has credits for normal jobs again (``Status.available``):
  at the reset, as a rolling window's oldest credits come back, or right after an admin raises the limit.
  While only the reserve is left (``remaining`` but nothing ``available``), the parked essential jobs go back
  and the pause narrows to normal jobs, so essential jobs go on and normal ones keep waiting;
- ``org_limit`` resumes once Salesforce reports the org's usage below the resume share; while paused the org
  is probed with a metered ``/limits`` call at a bounded rate (from the reserve only when essential jobs
  wait and nothing else is left);
- ``auth_failed`` waits for ``crmsync resume TENANT`` (after fixing the connection).
Each check reads the bucket, never the time of day, so daily and rolling windows resume alike. Parked jobs
are sent back one by one and removed only once sent, so a crash re-sends a job rather than losing it (jobs
are idempotent). Each gets a growing delay, so a resumed tenant does not hit Salesforce with all its jobs at
once. Essential jobs go back only while credits are left for them, and the pause they find then lets them
run, so none is sent back only to park again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import dramatiq
import redis
import structlog

from quota.bucket import CreditBucket
from worker import keys
from worker.enqueue import send_job
from worker.jobs.parking import ParkedJob, PauseState, PauseStore
from worker.jobs.runtime import get_runtime
from worker.notifications.notifier import Notifier, quota_restored

__all__ = ["Resumer", "ResumerMiddleware", "ResumerSettings", "make_resumer", "send_parked"]

log = structlog.get_logger("crmsync.resume")

# Sends a parked job back to its actor after ``delay_ms``.
Send = Callable[[ParkedJob, int], None]
# A metered probe of the tenant's org (paid from the reserve when the flag says essential): its API usage as a
# share of its daily max, or None if unknown.
Probe = Callable[[str, bool], float | None]
# What a check decides for a paused tenant: resume it, send its essential jobs back, or wait.
Decision = Literal["resume", "essential", "wait"]


@dataclass(frozen=True)
class ResumerSettings:
    """How the resumer paces itself."""

    tick_seconds: float = 0.2
    spacing_ms: int = 100
    probe_interval_seconds: float = 300.0
    org_resume_share: float = 0.75


@dataclass
class Resumer:
    """Checks paused tenants and resumes those that may go on."""

    client: redis.Redis
    bucket: CreditBucket
    pauses: PauseStore
    send: Send
    notifier: Notifier
    probe: Probe | None = None
    settings: ResumerSettings = field(default_factory=ResumerSettings)
    clock: Callable[[], float] = time.time
    _last_probe: dict[str, float] = field(default_factory=dict)

    def tick(self) -> list[str]:
        """One pass over the paused tenants; returns those resumed (not those whose essential jobs alone went
        back)."""
        resumed = []
        for tenant in self.pauses.paused_tenants():
            try:
                state = self.pauses.get(tenant)
                if state is None:
                    self._drain(tenant)  # unpaused, with stragglers parked after the resume
                    self.pauses.forget_if_idle(tenant)
                    continue
                decision = self.decide(tenant, state)
                if decision == "resume":
                    self.resume(tenant, by="auto")
                    resumed.append(tenant)
                elif decision == "essential":
                    self.resume_essential(tenant, state.reason)
            except Exception:  # one tenant's trouble must not stop the others from resuming
                log.exception("resume_check_failed", tenant=tenant)
        return resumed

    def decide(self, tenant: str, state: PauseState) -> Decision:
        """What the paused ``tenant`` may do now."""
        if state.reason == "quota_exhausted":
            status = self.bucket.status(tenant)
            if status.available > 0:
                return "resume"
            # Only the reserve is left: essential jobs may go on. Once the pause holds normal jobs only and no
            # essential job is parked, there is nothing to do.
            waiting = state.scope == "all" or self.pauses.essential_count(tenant) > 0
            return "essential" if status.remaining > 0 and waiting else "wait"
        if state.reason == "org_limit" and self.probe is not None:
            return "resume" if self._org_recovered(tenant, state, self.probe) else "wait"
        return "wait"

    def _org_recovered(self, tenant: str, state: PauseState, probe: Probe) -> bool:
        now = self.clock()
        # The first probe comes one interval after the pause began: the org was just found at its limit.
        if now - self._last_probe.get(tenant, state.since) < self.settings.probe_interval_seconds:
            return False
        self._last_probe[tenant] = now
        status = self.bucket.status(tenant)
        # A probe costs a credit: a normal one, or one of the reserve when only essential jobs could go on.
        essential = status.available <= 0
        if essential and (status.remaining <= 0 or self.pauses.essential_count(tenant) == 0):
            return False
        share = probe(tenant, essential)
        log.info("org_probed", tenant=tenant, share=share, essential=essential)
        return share is not None and share < self.settings.org_resume_share

    def resume(self, tenant: str, *, by: str) -> int:
        """End the tenant's pause and send its parked jobs back; returns how many were sent."""
        lock = self.client.lock(keys.resuming(tenant), timeout=60, blocking_timeout=10)
        if not lock.acquire():
            return 0
        try:
            state = self.pauses.unpause(tenant)
            sent = self._drain(tenant)
        finally:
            lock.release()
        self.pauses.forget_if_idle(tenant)
        log.info("tenant_resumed", tenant=tenant, by=by, jobs=sent, reason=state.reason if state else None)
        if state is not None and state.reason == "quota_exhausted":
            quota_restored(tenant, self.bucket.status(tenant), resumed=sent, since=state.since).raise_on(self.notifier)
        return sent

    def resume_essential(self, tenant: str, reason: str) -> int:
        """Only the reserve is left: narrow the tenant's pause (still for ``reason``) to normal jobs and send its
        parked essential jobs back; returns how many were sent."""
        lock = self.client.lock(keys.resuming(tenant), timeout=60, blocking_timeout=10)
        if not lock.acquire():
            return 0
        try:
            # Narrowed before the drain: an essential job that runs dry meanwhile widens the pause again, and is
            # at worst sent back once more and parks again; no check sends anything while no credit is left.
            if not self.pauses.narrow(tenant, reason):
                return 0
            sent = self._drain(tenant, essential_only=True)
        finally:
            lock.release()
        log.info("essential_jobs_resumed", tenant=tenant, jobs=sent, reason=reason)
        return sent

    def _drain(self, tenant: str, *, essential_only: bool = False) -> int:
        sent = 0
        while (first := self.pauses.first_parked(tenant, essential_only=essential_only)) is not None:
            stored, job = first
            self.send(job, sent * self.settings.spacing_ms)
            self.pauses.remove_parked(tenant, stored)
            sent += 1
        return sent

    def run(self, stop: threading.Event, sleep: Callable[[float], object] | None = None) -> None:
        """Tick until ``stop`` is set, while this process holds the resumer lease."""
        wait = sleep or stop.wait
        lease = self.client.lock(keys.RESUMER_LEASE, timeout=max(5.0, self.settings.tick_seconds * 10),
                                 blocking=False)
        while not stop.is_set():
            try:
                held = lease.extend(lease.timeout, replace_ttl=True) if lease.owned() else lease.acquire()
                if held:
                    self.tick()
            except redis.RedisError as exc:
                log.warning("resumer_redis_error", error=str(exc))
            wait(self.settings.tick_seconds)
        if lease.owned():
            lease.release()


def send_parked(job: ParkedJob, delay_ms: int) -> None:
    """Send a parked job back to its actor, after ``delay_ms`` (0: at once)."""
    send_job(job.actor, job.kwargs, delay_ms=delay_ms or None)


def make_resumer() -> Resumer:
    """The resumer of this worker process, on its runtime."""
    runtime = get_runtime()
    settings = ResumerSettings(probe_interval_seconds=runtime.settings.org_probe_seconds,
                               org_resume_share=runtime.settings.org_resume_share)
    return Resumer(runtime.redis, runtime.bucket, runtime.pauses, send_parked, runtime.notifier,
                   probe=lambda tenant, essential: runtime.probe_org(tenant, essential=essential), settings=settings)


class ResumerMiddleware(dramatiq.Middleware):
    """Runs the resumer in a thread of every worker process; the lease lets one of them work at a time."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the resumer thread."""
        resumer = make_resumer()
        self._thread = threading.Thread(target=resumer.run, args=(self._stop,), name="crmsync-resumer", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop the resumer thread, releasing its lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
