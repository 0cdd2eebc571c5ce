"""The Dramatiq app of the jobs benchmark: ``worker.app`` unchanged, except that tenants named ``off-*`` run
their Salesforce requests without metering.

Run as ``python -m dramatiq bench.jobs_app --processes N --threads T`` (what ``crmsync worker`` runs, with
this module instead of ``worker.app``). Both variants share these processes, threads, broker, job code and
emulator; a tenant's name alone picks its session, through the runtime's session factory:

- ``on-*`` tenants get the product's ``MeteredSession`` (a credit from the bucket before each request,
  ``Sforce-Limit-Info`` recorded in Redis, metrics and quota-alert hooks);
- ``off-*`` tenants get ``UnmeteredSession``: the same class and set-up, whose counted requests go straight
  to ``requests`` (no credit, no usage record, no hooks).

The product has no switch to turn metering off (nor should it), so the switch lives here.
"""

from __future__ import annotations

from typing import Any

import requests

from bench.jobs_bench import OFF_PREFIX
from worker.app import broker
from worker.jobs.runtime import Runtime, metered_session, use_session_factory
from worker.salesforce.session import MeteredSession

__all__ = ["OFF_PREFIX", "UnmeteredSession", "bench_session", "broker"]


class UnmeteredSession(MeteredSession):
    """A ``MeteredSession`` that skips the metering (the same timeouts): what a worker without it would send."""

    def send_metered(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request`` as plain ``requests`` does."""
        return requests.Session.send(self, request, **kwargs)


def bench_session(runtime: Runtime, tenant: str, sobject: str) -> MeteredSession:
    """The product's metered session, or for an ``off-*`` tenant an unmetered one (built as such: building a
    metered one and swapping it would charge the unmetered variant for a session it does not use)."""
    if tenant.startswith(OFF_PREFIX):
        return UnmeteredSession(tenant, runtime.bucket, sobject=sobject, timeout=runtime.settings.request_timeout)
    return metered_session(runtime, tenant, sobject)


use_session_factory(bench_session)
