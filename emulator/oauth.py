"""The OAuth 2.0 token endpoint: client_credentials, refresh_token and JWT bearer grants."""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import parse_qsl

import jwt

from emulator.identity import identity_url
from emulator.orgs import Org
from emulator.registry import Registry

__all__ = ["JWT_AUDIENCES", "JWT_GRANT", "OAuthError", "token_grant"]

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


class OAuthError(Exception):
    """A refused token request, answered as ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


def _client(form: dict[str, str], authorization: str) -> tuple[str, str]:
    # Salesforce takes client credentials from the form or from HTTP Basic authentication.
    if authorization.lower().startswith("basic "):
        try:
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise OAuthError(400, "invalid_request", "malformed Authorization header") from None
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


def _org_of_client(registry: Registry, client_id: str) -> Org:
    org = registry.by_client_id(client_id) if client_id else None
    if org is None:
        raise OAuthError(400, "invalid_client_id", "client identifier invalid")
    return org


def _check_secret(org: Org, secret: str) -> None:
    # Salesforce answers a wrong client secret with 400, like every other refused token request.
    if not secrets.compare_digest(org.client_secret, secret):
        raise OAuthError(400, "invalid_client", "invalid client credentials")


def _jwt_org(registry: Registry, assertion: str) -> Org:
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise OAuthError(400, "invalid_grant", "invalid assertion") from None
    org = _org_of_client(registry, str(claims.get("iss", "")))
    audiences = [registry.base_url, *JWT_AUDIENCES]
    try:
        claims = jwt.decode(assertion, org.public_key, algorithms=["RS256"], audience=audiences,
                            options={"verify_exp": False, "require": ["iss", "sub", "aud", "exp"]})
    except jwt.InvalidAudienceError:
        raise OAuthError(400, "invalid_grant", "audience is invalid") from None
    except jwt.InvalidTokenError:
        raise OAuthError(400, "invalid_grant", "invalid assertion") from None
    # Expiry is checked against the emulator's clock, which tests move, not the wall clock pyjwt reads.
    if not isinstance(claims["exp"], int | float) or claims["exp"] <= registry.clock():
        raise OAuthError(400, "invalid_grant", "expired authorization code")
    if claims["sub"] != org.username:
        raise OAuthError(400, "invalid_grant", "user hasn't approved this consumer")
    return org


def token_grant(registry: Registry, body: bytes, authorization: str) -> tuple[Org, dict[str, Any]]:
    """Answer one token request: the org and the token response, or raise OAuthError."""
    form = dict(parse_qsl(body.decode("utf-8", "replace")))
    grant = form.get("grant_type", "")
    if grant == "client_credentials":
        client_id, secret = _client(form, authorization)
        org = _org_of_client(registry, client_id)
        _check_secret(org, secret)
    elif grant == "refresh_token":
        client_id, secret = _client(form, authorization)
        org = _org_of_client(registry, client_id)
        if secret:
            _check_secret(org, secret)
        if not secrets.compare_digest(form.get("refresh_token", ""), org.refresh_token):
            raise OAuthError(400, "invalid_grant", "expired access/refresh token")
    elif grant == JWT_GRANT:
        org = _jwt_org(registry, form.get("assertion", ""))
    elif not grant:
        raise OAuthError(400, "invalid_request", "grant type not specified")
    else:
        raise OAuthError(400, "unsupported_grant_type", "grant type not supported")
    token = registry.issue_token(org)
    issued_at = str(int(registry.clock() * 1000))
    return org, {
        "access_token": token,
        "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
        "scope": "api",
        "instance_url": registry.base_url,
        "id": identity_url(registry.base_url, org),
        "token_type": "Bearer",
        "issued_at": issued_at,
    }
