"""simple-salesforce for one tenant: the metered session, one token refresh on 401, retries for faults."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TypeVar

import structlog
import tenacity
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceRefusedRequest

from worker.errors import AuthFailed, OrgLimitExceeded, UnsafeRequest
from worker.salesforce.oauth import AccessToken
from worker.salesforce.retry import RetryPolicy, is_daily_org_limit, salesforce_error_code
from worker.salesforce.session import MeteredSession

__all__ = ["API_VERSION", "CachedTokens", "TenantSalesforce", "TokenSource", "next_records_path"]

API_VERSION = "59.0"
T = TypeVar("T")
log = structlog.get_logger("crmsync.salesforce")
# A query's next page as Salesforce writes nextRecordsUrl, e.g. /services/data/v59.0/query/01gRO0000016PIAYA2-500:
# the API version, then the query locator, an 18-character (or 15) id and the offset of the page. queryAll's
# pages use /query/ too, and our pulls never use queryAll.
_NEXT_RECORDS = re.compile(r"/services/data/v[0-9]{2,3}\.[0-9]/query/(?:[A-Za-z0-9]{15}|[A-Za-z0-9]{18})-[0-9]{1,9}")


def next_records_path(value: object) -> str:
    """``value`` when it is a query's next-records path as Salesforce writes it; raises ``UnsafeRequest`` for
    anything else. simple-salesforce appends the path to ``https://{instance}``, so a value such as
    ``.evil.example/x`` or ``@evil.example/x`` would send the tenant's bearer token to another host."""
    if not isinstance(value, str) or not _NEXT_RECORDS.fullmatch(value):
        shown = repr(value[:100]) if isinstance(value, str) else type(value).__name__
        raise UnsafeRequest(f"not a Salesforce next-records path: {shown}")
    return value


class TokenSource(Protocol):
    """Where access tokens come from (``worker.salesforce.oauth.TokenClient`` in production)."""

    def fetch(self) -> AccessToken: ...

    def refresh(self) -> AccessToken: ...


class CachedTokens:
    """Keeps one tenant's access token in memory (never in Redis) and shares it across a process's jobs."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def current(self) -> AccessToken:
        """The cached token, fetched on first use."""
        with self._lock:
            if self._token is None:
                self._token = self._source.fetch()
            return self._token

    def refresh(self, stale: AccessToken) -> AccessToken:
        """A new token after ``stale`` was refused; a thread that already refreshed it shares the new one."""
        with self._lock:
            if self._token is None or self._token.access_token == stale.access_token:
                self._token = self._source.refresh()
            return self._token


class TenantSalesforce:
    """Runs Salesforce operations for one tenant through its metered session."""

    def __init__(
        self,
        tenant: str,
        *,
        session: MeteredSession,
        tokens: CachedTokens,
        policy: RetryPolicy,
        version: str = API_VERSION,
    ) -> None:
        self.tenant = tenant
        self.session = session
        self.tokens = tokens
        self.policy = policy
        self.version = version

    def _client(self, token: AccessToken) -> Salesforce:
        # session_id auth makes no login call and never retries a 401 by itself. The session sends only to the
        # instance the token was issued for.
        self.session.bind(token.instance_url)
        return Salesforce(
            instance_url=token.instance_url, session_id=token.access_token, session=self.session, version=self.version
        )

    def _once(self, operation: Callable[[Salesforce], T]) -> T:
        token = self.tokens.current()
        try:
            return operation(self._client(token))
        except SalesforceExpiredSession:
            log.info("token_refused", tenant=self.tenant)
            fresh = self.tokens.refresh(token)
        try:
            return operation(self._client(fresh))
        except SalesforceExpiredSession as exc:
            raise AuthFailed(
                self.tenant, "Salesforce refused a freshly issued access token (401 INVALID_SESSION_ID)",
                error="invalid_session", status=401,
            ) from exc

    def call(self, operation: Callable[[Salesforce], T], *, what: str, retry: bool = True) -> T:
        """Run ``operation`` (one Salesforce request) with retries for transient faults; ``retry=False`` for a
        request that must not be sent twice when its first answer was lost (a Bulk upload)."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("salesforce_retry", tenant=self.tenant, what=what, attempt=state.attempt_number,
                        error=type(error).__name__, detail=str(error)[:200])

        try:
            policy = self.policy if retry else replace(self.policy, attempts=1)
            for attempt in policy.retrying(before_sleep=before_sleep):
                with attempt:
                    return self._once(operation)
        except SalesforceRefusedRequest as exc:
            if is_daily_org_limit(exc):
                raise OrgLimitExceeded(self.tenant, salesforce_error_code(exc)[1]) from exc
            raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
