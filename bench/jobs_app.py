"""The Dramatiq app of the jobs benchmark: ``worker.app`` unchanged, except that tenants named ``off-*`` run
their Salesforce requests without metering.

Run as ``python -m dramatiq bench.jobs_app --processes N --threads T`` (what ``crmsync worker`` runs, with
this module instead of ``worker.app``). Both variants share these processes, threads, broker, job code and
emulator; a tenant's name alone picks its session:

- ``on-*`` tenants get ``Runtime.salesforce`` itself: the product's ``MeteredSession`` (a credit from the
  bucket before each request, ``Sforce-Limit-Info`` recorded in Redis, metrics and quota-alert hooks);
- ``off-*`` tenants get ``UnmeteredSession``: the same class and set-up, whose counted requests go straight
  to ``requests`` (no credit, no usage record, no hooks).

The product has no switch to turn metering off (nor should it), so the switch lives here.
"""

from __future__ import annotations

from typing import Any

import requests

from bench.jobs_bench import OFF_PREFIX
from worker.app import actors, broker, delivery
from worker.jobs.runtime import Runtime
from worker.salesforce.client import TenantSalesforce
from worker.salesforce.connections import Connection
from worker.salesforce.session import MeteredSession

__all__ = ["OFF_PREFIX", "UnmeteredSession", "actors", "broker", "delivery"]

class UnmeteredSession(MeteredSession):
    """A ``MeteredSession`` that skips the metering (the same timeouts): what a worker without it would send."""

    def send_metered(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request`` as plain ``requests`` does."""
        return requests.Session.send(self, request, **kwargs)


_metered_salesforce = Runtime.salesforce


def _salesforce(self: Runtime, tenant: str, sobject: str = "") -> tuple[TenantSalesforce, Connection]:
    if not tenant.startswith(OFF_PREFIX):
        return _metered_salesforce(self, tenant, sobject)
    # As Runtime.salesforce, with the unmetered session: building a metered one and swapping it
    # would charge the unmetered variant for a session it does not use.
    connection = self.connections.get(tenant)
    tokens = self.tokens(connection)
    session = UnmeteredSession(tenant, self.bucket, sobject=sobject)
    session.verify = connection.ca_bundle or True
    return TenantSalesforce(tenant, session=session, tokens=tokens, policy=self.policy), connection


setattr(Runtime, "salesforce", _salesforce)  # noqa: B010 (mypy refuses assigning to a method)
