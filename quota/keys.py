"""The credit bucket's Redis keys. (The worker's keys, and these again, are in ``worker/keys.py``.)

A tenant's keys all carry the hash tag ``{tenant}``, so each tenant lives in one Redis Cluster slot and a
script may touch several of them. The tenant registry carries no tag and is only touched outside tenant
scripts.

=====================================  ======  ==============================================================
key                                    type    what
=====================================  ======  ==============================================================
``crmsync:tenants``                    set     every tenant id that has quota config
``crmsync:{T}:config``                 hash    ``limit``, ``reset_at`` (HH:MM UTC), ``reset_from``,
                                               ``reserve``, ``window`` (``daily`` or ``rolling``)
``crmsync:{T}:w:<END>``                int     daily mode: credits used in the window ending at epoch second
                                               ``END``; expires shortly after ``END``
``crmsync:{T}:w:rolling``              hash    rolling mode: credits used per hour (field: epoch hour); expires
                                               shortly after its newest credits come back
``crmsync:{T}:audit``                  list    JSON audit entries, newest first, trimmed to a bound
=====================================  ======  ==============================================================

The limit is a value, never part of a key: a change applies to the next take without moving any state.
"""

from __future__ import annotations

__all__ = ["PREFIX", "TENANTS", "audit", "config", "daily_counter", "rolling_window", "scope", "window_prefix"]

PREFIX = "crmsync:"
TENANTS = f"{PREFIX}tenants"


def scope(tenant: str) -> str:
    """The prefix of every key of ``tenant``, with its hash tag."""
    return f"{PREFIX}{{{tenant}}}"


def config(tenant: str) -> str:
    """Hash of a tenant's admin-set quota config."""
    return f"{scope(tenant)}:config"


def window_prefix(tenant: str) -> str:
    """Prefix of a tenant's window counters: ``daily_counter`` appends the window's end (epoch seconds)."""
    return f"{scope(tenant)}:w:"


def daily_counter(tenant: str, end: int) -> str:
    """Counter of a daily-mode tenant's credits used in the window ending at epoch second ``end``."""
    return f"{window_prefix(tenant)}{end}"


def rolling_window(tenant: str) -> str:
    """Hash of a rolling-mode tenant's credits per hour of the last 25 (it shares the window counters' prefix)."""
    return f"{window_prefix(tenant)}rolling"


def audit(tenant: str) -> str:
    """List of a tenant's config changes, newest first."""
    return f"{scope(tenant)}:audit"
