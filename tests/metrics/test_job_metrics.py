"""crmsync_jobs_total is counted by the worker app's middleware from the outcome a job run recorded."""

from __future__ import annotations

from typing import Any

from dramatiq import Message, MessageProxy
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY

from worker.metrics.jobs import JobMetrics, record_outcome


def _jobs_total(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("crmsync_jobs_total", {"kind": kind, "outcome": outcome}) or 0.0


def _message() -> Message[Any]:
    return Message(queue_name="crmsync", actor_name="crmsync_push", args=(), kwargs={"tenant": "acme"}, options={})


def test_a_recorded_outcome_is_counted_once_and_taken_off_the_message() -> None:
    middleware, broker, message = JobMetrics(), StubBroker(), _message()
    before = _jobs_total("push", "failed")
    record_outcome(message, "push", "failed")
    middleware.after_process_message(broker, MessageProxy(message), exception=RuntimeError("last retry"))
    middleware.after_process_message(broker, MessageProxy(message))
    assert _jobs_total("push", "failed") == before + 1
    assert message.options == {}  # a dead-lettered or retried message is stored as it was sent


def test_a_run_that_did_not_end_its_job_counts_nothing() -> None:
    before = {(s.labels["kind"], s.labels["outcome"]): s.value
              for family in REGISTRY.collect() if family.name == "crmsync_jobs" for s in family.samples}
    JobMetrics().after_process_message(StubBroker(), MessageProxy(_message()), exception=RuntimeError("retrying"))
    after = {(s.labels["kind"], s.labels["outcome"]): s.value
             for family in REGISTRY.collect() if family.name == "crmsync_jobs" for s in family.samples}
    assert after == before
