"""``crmsync_jobs_total{kind,outcome}``: counted by a Dramatiq middleware from what each job run recorded.

An actor whose run ends its job records the job's kind and outcome on its message (``record_outcome``);
``JobMetrics``, in the worker app's middleware, counts it once the message is processed, whether the actor
returned or raised. A run that does not end its job (sent again, or left to a Dramatiq retry) records nothing.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from worker.metrics.instruments import JOBS

__all__ = ["JobMetrics", "record_outcome"]

# The message option carrying [kind, outcome]. Taken off when counted: Dramatiq runs after-hooks in reverse
# order of addition, so the middleware added before this one (Retries) then store the message as it was sent.
_OPTION = "crmsync_job_outcome"


def record_outcome(message: dramatiq.Message[Any], kind: str, outcome: str) -> None:
    """Record on ``message`` that its run ended a job of ``kind`` (pull or push) with ``outcome``."""
    message.options[_OPTION] = [kind, outcome]


class JobMetrics(dramatiq.Middleware):
    """Counts the outcome each job run recorded on its message in ``crmsync_jobs_total``."""

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        """Count the recorded outcome, if any."""
        recorded = message.options.pop(_OPTION, None)
        if recorded is not None:
            kind, outcome = recorded
            JOBS.labels(kind=kind, outcome=outcome).inc()
