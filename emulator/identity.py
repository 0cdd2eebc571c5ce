"""Salesforce's identity service: the identity URL of a token (``/id/{orgId}/{userId}``) and OpenID Connect's
``/services/oauth2/userinfo``, both about the emulator's one integration user of the token's org.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from emulator.orgs import Org
from emulator.sftime import format_epoch
from emulator.store import USER_ID

__all__ = ["identity", "identity_url", "userinfo"]

_TIMEZONE = "America/Los_Angeles"
_UTC_OFFSET_MS = -28_800_000


def identity_url(base_url: str, org: Org) -> str:
    """The identity URL of the org's integration user, as the token response's ``id`` names it."""
    return f"{base_url}/id/{org.org_id}/{USER_ID}"


def _urls(base_url: str, org: Org, version: str | None) -> dict[str, str]:
    # Without a version parameter Salesforce leaves the literal "{version}" in these templates.
    v = version or "{version}"
    org15 = org.org_id[:15]
    data = f"{base_url}/services/data/v{v}"
    return {
        "enterprise": f"{base_url}/services/Soap/c/{v}/{org15}",
        "metadata": f"{base_url}/services/Soap/m/{v}/{org15}",
        "partner": f"{base_url}/services/Soap/u/{v}/{org15}",
        "rest": f"{data}/",
        "sobjects": f"{data}/sobjects/",
        "search": f"{data}/search/",
        "query": f"{data}/query/",
        "recent": f"{data}/recent/",
        "tooling_soap": f"{base_url}/services/Soap/T/{v}/{org15}",
        "tooling_rest": f"{data}/tooling/",
        "profile": f"{base_url}/{USER_ID}",
        "feeds": f"{data}/chatter/feeds",
        "groups": f"{data}/chatter/groups",
        "users": f"{data}/chatter/users",
        "feed_items": f"{data}/chatter/feed-items",
        "feed_elements": f"{data}/chatter/feed-elements",
        "custom_domain": base_url,
    }


def _photos(base_url: str) -> dict[str, str]:
    return {"picture": f"{base_url}/profilephoto/005/F", "thumbnail": f"{base_url}/profilephoto/005/T"}


def identity(base_url: str, org: Org, version: str | None) -> dict[str, Any]:
    """The identity URL's answer (JSON format)."""
    return {
        "id": identity_url(base_url, org),
        "asserted_user": True,
        "user_id": USER_ID,
        "organization_id": org.org_id,
        "username": org.username,
        "nick_name": org.username.split("@", 1)[0],
        "display_name": "Integration User",
        "email": org.username,
        "email_verified": True,
        "first_name": "Integration",
        "last_name": "User",
        "timezone": _TIMEZONE,
        "photos": _photos(base_url),
        "addr_street": None, "addr_city": None, "addr_state": None, "addr_country": "US", "addr_zip": None,
        "mobile_phone": None,
        "mobile_phone_verified": False,
        "is_lightning_login_user": False,
        "status": {"created_date": None, "body": None},
        "urls": _urls(base_url, org, version),
        "active": True,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": _UTC_OFFSET_MS,
        "last_modified_date": format_epoch(org.store.created_at),
        "is_app_installed": True,
    }


def userinfo(base_url: str, org: Org) -> dict[str, Any]:
    """The UserInfo endpoint's answer: the OpenID Connect claims plus Salesforce's own."""
    return {
        "sub": identity_url(base_url, org),
        "user_id": USER_ID,
        "organization_id": org.org_id,
        "preferred_username": org.username,
        "nickname": org.username.split("@", 1)[0],
        "name": "Integration User",
        "email": org.username,
        "email_verified": True,
        "given_name": "Integration",
        "family_name": "User",
        "zoneinfo": _TIMEZONE,
        "photos": _photos(base_url),
        "profile": f"{base_url}/{USER_ID}",
        "picture": _photos(base_url)["picture"],
        "address": {"country": "US"},
        "is_salesforce_integration_user": False,
        "urls": _urls(base_url, org, None),
        "active": True,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": _UTC_OFFSET_MS,
        # OpenID Connect's claims write the time as ISO 8601 in UTC, without milliseconds.
        "updated_at": datetime.fromtimestamp(org.store.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "is_app_installed": True,
    }
