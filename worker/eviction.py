"""Whether Redis may evict crmsync's keys: its ``maxmemory-policy``, as ``INFO memory`` reports it.

Under any policy but ``noeviction``, a Redis at its memory limit deletes keys to make room. The ``volatile-*``
policies (the default of many managed services) pick keys with a TTL, which are the credit windows, and an
evicted window is a full bucket: the tenant's credits come back early and its org's API limit pays for it.
``crmsync status``, ``crmsync worker`` at start and ``crmsync metrics`` report the policy. It is read with
``INFO``, which managed services allow, not ``CONFIG GET``, which most refuse.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from quota.replies import text

__all__ = ["SAFE_POLICY", "eviction_warning", "maxmemory_policy"]

#: The only policy under which Redis never deletes a key to make room (it refuses writes instead).
SAFE_POLICY = "noeviction"


def maxmemory_policy(client: redis.Redis) -> str | None:
    """Redis's ``maxmemory-policy``, or ``None`` if ``INFO memory`` does not report one.

    Raises ``redis.RedisError`` when Redis cannot be asked (down, or ``INFO`` refused to this user).
    """
    info = cast(dict[str, Any], client.info("memory"))
    return text(info.get("maxmemory_policy")) or None


def eviction_warning(policy: str | None) -> str | None:
    """One line for ops about ``policy`` (``None`` for ``noeviction``): it names the policy and what to do."""
    if policy == SAFE_POLICY:
        return None
    named = f"is {policy}" if policy else "is not reported by INFO"
    return (f"Redis maxmemory-policy {named}, not {SAFE_POLICY}: at its memory limit Redis may evict credit "
            f"windows, and an evicted window is a full bucket; set maxmemory-policy {SAFE_POLICY}")
