"""Our own small OAuth 2.0 client for Salesforce token endpoints.

simple-salesforce's login is hard-wired to ``*.salesforce.com`` and retries 401s by recursing, so the worker
gets tokens here and hands simple-salesforce only ``instance_url`` and ``session_id``. Token requests are not
metered (Salesforce does not document them as counted).

Secrets are read from their references at request time and dropped after the request. Before anything is read
or sent, the stored login URL and each reference are checked again by connect's rules (a connection stored
before them, or written into Redis by hand, may break them): a refused one is ``AuthFailed``, which pauses the
tenant. Access tokens live in memory only: ``AccessToken`` hides its token from ``repr``/``str``, and no log
line or error carries a token or a secret.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests
import structlog

from worker.errors import AuthFailed, ConnectionRefused, SecretUnavailable
from worker.salesforce.connections import Connection, check_login_url
from worker.secrets import read_secret
from worker.settings import SecretSettings

__all__ = ["JWT_BEARER_GRANT", "JWT_LIFETIME_S", "AccessToken", "TokenClient"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce accepts assertions valid for at most 3 minutes.
JWT_LIFETIME_S = 180
_MAX_DESCRIPTION = 300

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AccessToken:
    """A bearer token for one org. ``issued_at`` is the local epoch second the token request was sent."""

    access_token: str = field(repr=False)
    instance_url: str
    issued_at: float


class TokenClient:
    """Gets access tokens for one connection by running its grant against its login host's token endpoint.

    Safe to share between threads. HTTPS is verified against ``connection.ca_bundle`` when set (the emulator's
    throwaway CA), else the system CAs. ``secrets`` (default: read from the environment) say which login hosts
    and secret references are allowed.
    """

    def __init__(self, connection: Connection, *, timeout: float = 30.0,
                 secrets: SecretSettings | None = None) -> None:
        self.connection = connection
        self.timeout = timeout
        self.secrets = secrets or SecretSettings.from_env()
        self._session = requests.Session()
        self._lock = threading.Lock()
        # A refresh token the token endpoint handed back (in memory only), used by refresh() before the grant.
        self._issued_refresh_token: str | None = None

    def fetch(self) -> AccessToken:
        """Run the connection's grant and return a new access token; raises ``AuthFailed``."""
        with self._lock:
            return self._run_grant(self._login_url())

    def refresh(self) -> AccessToken:
        """A fresh token after a 401: the refresh-token grant if a refresh token is known, else the grant again."""
        with self._lock:
            login = self._login_url()
            if self.connection.grant != "refresh_token" and self._issued_refresh_token is not None:
                try:
                    return self._post(login, self._refresh_form(self._issued_refresh_token))
                except AuthFailed:
                    # The issued refresh token may have been revoked; the connection's own grant may still work.
                    self._issued_refresh_token = None
            return self._run_grant(login)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._session.close()

    def _login_url(self) -> str:
        # Checked before any secret is read: a refused host never learns that the tenant exists.
        try:
            return check_login_url(self.connection.login_url, self.secrets)
        except ConnectionRefused as exc:
            raise self._failed(f"stored connection refused: {exc}: run `crmsync connect` again",
                               error="login_url_refused") from None

    def _run_grant(self, login: str) -> AccessToken:
        grant = self.connection.grant
        if grant == "client_credentials":
            form = {"grant_type": "client_credentials", "client_id": self.connection.client_id,
                    "client_secret": self._secret(self.connection.client_secret_ref, "client secret")}
        elif grant == "jwt_bearer":
            form = {"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion(login)}
        else:
            form = self._refresh_form(self._secret(self.connection.refresh_token_ref, "refresh token"))
        return self._post(login, form)

    def _refresh_form(self, refresh_token: str) -> dict[str, str]:
        form = {"grant_type": "refresh_token", "client_id": self.connection.client_id, "refresh_token": refresh_token}
        if self.connection.client_secret_ref is not None:
            form["client_secret"] = self._secret(self.connection.client_secret_ref, "client secret")
        return form

    def _secret(self, ref: str | None, what: str) -> str:
        if ref is None:
            raise self._failed(f"the connection has no {what} for its {self.connection.grant} grant",
                               error="secret_unreadable")
        try:
            return read_secret(ref, self.secrets)
        except SecretUnavailable as exc:
            raise self._failed(f"{what} unavailable: {exc}", error="secret_unreadable") from None

    def _assertion(self, login: str) -> str:
        key = self._secret(self.connection.private_key_ref, "private key")
        claims = {"iss": self.connection.client_id, "sub": self.connection.username,
                  "aud": login, "exp": int(time.time()) + JWT_LIFETIME_S}
        try:
            return jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            # The library's message is dropped: it could quote the key.
            raise self._failed("private key is not a usable RSA key for RS256", error="secret_unreadable") \
                from None

    def _post(self, login: str, form: dict[str, str]) -> AccessToken:
        url = f"{login}/services/oauth2/token"
        issued_at = time.time()
        failure: str | None = None
        try:
            # No redirects: a redirect would carry the form (and its secret) to a host nobody configured.
            response = self._session.post(url, data=form, timeout=self.timeout, allow_redirects=False,
                                          verify=self.connection.ca_bundle or True,
                                          headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            # Raised outside this block so the requests exception (which holds the request body) is not chained.
            failure = f"{type(exc).__name__}: {self._scrub(str(exc), form)}"
        if failure is not None:
            log.warning("token_request_failed", tenant=self.connection.tenant, grant=self.connection.grant,
                        token_url=url, reason=failure)
            raise self._failed(f"cannot reach the token endpoint {url}: {failure}", error="network")
        return self._parse(response, url, form, issued_at)

    def _parse(self, response: requests.Response, url: str, form: Mapping[str, str],
               issued_at: float) -> AccessToken:
        body = _json_object(response)
        if response.status_code != 200:
            error = str(body.get("error") or f"http_{response.status_code}")
            description = self._scrub(str(body.get("error_description") or response.reason or ""), form)
            error = self._scrub(error, form)[:_MAX_DESCRIPTION]
            log.warning("token_refused", tenant=self.connection.tenant, grant=self.connection.grant,
                        token_url=url, status=response.status_code, error=error, description=description)
            raise self._failed(f"token endpoint {url} refused the {self.connection.grant} grant "
                               f"({response.status_code} {error}: {description})",
                               error=error, status=response.status_code)
        token, instance_url = body.get("access_token"), body.get("instance_url")
        if not isinstance(token, str) or not token or not isinstance(instance_url, str) \
                or not instance_url.startswith("https://"):
            raise self._failed(f"token endpoint {url} answered 200 without an access_token and an https "
                               "instance_url", error="bad_response", status=200)
        refresh_token = body.get("refresh_token")
        if isinstance(refresh_token, str) and refresh_token:
            self._issued_refresh_token = refresh_token
        log.info("token_issued", tenant=self.connection.tenant, grant=self.connection.grant,
                 instance_url=instance_url)
        return AccessToken(access_token=token, instance_url=instance_url.rstrip("/"), issued_at=issued_at)

    @staticmethod
    def _scrub(text: str, form: Mapping[str, str]) -> str:
        # Servers sometimes echo parts of the request back; never let a secret we sent into a message or a log.
        for name in ("client_secret", "refresh_token", "assertion"):
            value = form.get(name)
            if value:
                text = text.replace(value, "***")
        return text[:_MAX_DESCRIPTION]

    def _failed(self, message: str, *, error: str, status: int | None = None) -> AuthFailed:
        return AuthFailed(self.connection.tenant, f"tenant {self.connection.tenant!r}: {message}",
                          error=error, status=status)


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
