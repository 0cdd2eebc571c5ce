"""Worker settings from the environment, each with a default that suits production."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from worker.salesforce.session import DEFAULT_REQUEST_TIMEOUT_S

__all__ = ["DEFAULT_REDIS_URL", "WorkerSettings", "positive_setting", "redis_url"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    """``REDIS_URL`` (redis:// or rediss://, ACL user and password in the URL), else the local default."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def _share(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a share between 0 and 1, such as 0.9") from None
    if not 0 < value <= 1:
        raise ValueError(f"{name}={raw!r}: expected a share between 0 and 1, such as 0.9")
    return value


def positive_setting(name: str, default: float) -> float:
    """The environment variable ``name`` as a finite number above 0, or ``default`` when it is unset or empty;
    anything else is refused with a message naming the variable."""
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{name}={raw!r}: expected a number above 0, such as {default:g}")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    """``CRMSYNC_DATA_DIR``: where the default sink writes pulled records (default ``var/data``).
    ``CRMSYNC_QUOTA_WARNING_SHARES``: shares of the daily limit that raise quota_warning (default 0.8,0.95).
    ``CRMSYNC_ORG_PAUSE_SHARE`` / ``CRMSYNC_ORG_RESUME_SHARE``: a tenant pauses when its org's own usage (as
    Salesforce reports it) reaches the first share of the org's max, and resumes below the second
    (defaults 0.9 and 0.75). ``CRMSYNC_ORG_PROBE_SECONDS``: how often a paused org is probed (default 300).
    ``CRMSYNC_REQUEST_TIMEOUT``: seconds a Salesforce request may take before it is given up and retried as a
    transient fault (default 130; connecting may take at most 10 of them). ``CRMSYNC_JOB_SLICE_SECONDS``: after
    how long a job stops at its next checkpoint and is sent again (default 300, half Dramatiq's time limit).
    """

    data_dir: Path = Path("var/data")
    quota_warning_shares: tuple[float, ...] = (0.8, 0.95)
    org_pause_share: float = 0.9
    org_resume_share: float = 0.75
    org_probe_seconds: float = 300.0
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    job_slice_seconds: float = 300.0

    @classmethod
    def from_env(cls) -> WorkerSettings:
        """Read the settings, refusing malformed values with a message naming the variable."""
        shares_raw = os.environ.get("CRMSYNC_QUOTA_WARNING_SHARES")
        try:
            shares = tuple(sorted(float(s) for s in shares_raw.split(","))) if shares_raw else cls.quota_warning_shares
        except ValueError:
            raise ValueError(f"CRMSYNC_QUOTA_WARNING_SHARES={shares_raw!r}: expected shares such as 0.8,0.95") from None
        pause = _share("CRMSYNC_ORG_PAUSE_SHARE", cls.org_pause_share)
        resume = _share("CRMSYNC_ORG_RESUME_SHARE", cls.org_resume_share)
        if resume >= pause:
            raise ValueError("CRMSYNC_ORG_RESUME_SHARE must be below CRMSYNC_ORG_PAUSE_SHARE")
        probe = positive_setting("CRMSYNC_ORG_PROBE_SECONDS", cls.org_probe_seconds)
        timeout = positive_setting("CRMSYNC_REQUEST_TIMEOUT", cls.request_timeout)
        slice_s = positive_setting("CRMSYNC_JOB_SLICE_SECONDS", cls.job_slice_seconds)
        return cls(Path(os.environ.get("CRMSYNC_DATA_DIR") or cls.data_dir), shares, pause, resume, probe, timeout,
                   slice_s)
