"""Settings read from the environment, in one place, shared by every entry point."""

from __future__ import annotations

import os

__all__ = ["DEFAULT_REDIS_URL", "redis_url"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    """``REDIS_URL`` (redis:// or rediss://, ACL user and password in the URL), else the local default."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
