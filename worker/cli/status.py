"""``crmsync status``: one row per tenant (quota with its window mode and reserve, pause, parked jobs, org usage,
Bulk API budgets). A tenant whose config or counters are garbage is listed as invalid with the reason. A Redis
that may evict credit windows (``maxmemory-policy`` other than ``noeviction``) is named in a warning on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import redis

from quota.bucket import CreditBucket
from quota.errors import QuotaUnavailable
from worker.cli import Subcommands, add_command
from worker.cli.bucket import connect_bucket, status_dict
from worker.eviction import eviction_warning, maxmemory_policy
from worker.jobs.parking import PauseStore
from worker.salesforce import bulk_limits
from worker.salesforce.session import OrgUsage

__all__ = ["print_status", "register", "tenant_rows"]


def tenant_rows(bucket: CreditBucket) -> list[dict[str, Any]]:
    """Every configured tenant's quota status, pause state, parked jobs, its org's reported usage and Bulk API
    budgets."""
    pauses = PauseStore(bucket.redis)
    rows = []
    for tenant in bucket.tenants():
        try:
            rows.append(_row(bucket, pauses, tenant))
        except (redis.ResponseError, QuotaUnavailable) as exc:
            if isinstance(exc, QuotaUnavailable) and not isinstance(exc.__cause__, redis.ResponseError):
                raise  # Redis itself is unreachable: that is the command's failure, not this tenant's
            # A key written by hand with the wrong type: report this tenant as unreadable, list the others.
            rows.append({"tenant": tenant, "unreadable": f"{type(exc).__name__}: {exc}"})
    return rows


def _row(bucket: CreditBucket, pauses: PauseStore, tenant: str) -> dict[str, Any]:
    row = status_dict(bucket.status(tenant))
    pause = pauses.get(tenant)
    usage = OrgUsage.read(bucket.redis, tenant)
    row.update(
        paused=pause is not None,
        pause_reason=pause.reason if pause else None,
        pause_scope=pause.scope if pause else None,
        paused_since=pause.since if pause else None,
        parked_jobs=pauses.parked_count(tenant),
        org_api_usage=usage.used if usage else None,
        org_api_max=usage.max if usage else None,
    )
    row.update(_bulk_status(bucket.redis, tenant))
    return row


def _bulk_status(client: redis.Redis, tenant: str) -> dict[str, Any]:
    """``bulk``: the Bulk API budgets last read for ``tenant``, ``{name: {"remaining", "max"}, "read_at": iso}``
    (``None`` until a job first reads them); a hash that cannot be read is ``None`` with ``bulk_unreadable``."""
    try:
        budgets, at = bulk_limits.read(client, tenant)
    except redis.ResponseError as exc:  # a key of the wrong type: this field only
        return {"bulk": None, "bulk_unreadable": f"{type(exc).__name__}: {exc}"}
    if not budgets and at is None:
        return {"bulk": None}
    bulk: dict[str, Any] = {name: {"remaining": b.remaining, "max": b.max} for name, b in budgets.items()}
    try:
        bulk["read_at"] = None if at is None else datetime.fromtimestamp(at, UTC).isoformat()
    except (ValueError, OverflowError, OSError):  # a time no clock writes, e.g. "inf": not a reading
        bulk["read_at"] = None
    return {"bulk": bulk}


def _bulk_column(row: dict[str, Any]) -> str:
    """Query jobs and batches left, e.g. ``9,990/14,000``; ``?`` for one not read, ``-`` before any read."""
    if "bulk_unreadable" in row:
        return "UNREADABLE"
    if row["bulk"] is None:
        return "-"
    left = [f"{row['bulk'][name]['remaining']:,}" if name in row["bulk"] else "?"
            for name in ("query_jobs", "batches")]
    storage = row["bulk"].get("query_storage_mb")
    return "/".join(left) + (" (no query storage)" if storage is not None and storage["remaining"] == 0 else "")


def _state(row: dict[str, Any]) -> str:
    """``running``, or the pause's reason; a pause that holds only normal jobs says so (essential ones go on)."""
    if not row["paused"]:
        return "running"
    return f"paused: {row['pause_reason']}" + (" (normal jobs)" if row["pause_scope"] == "normal" else "")


def print_status(bucket: CreditBucket, *, as_json: bool = False) -> None:
    """Print ``crmsync status``."""
    rows = tenant_rows(bucket)
    if as_json:
        print(json.dumps(rows))
        return
    print(f"{'TENANT':<20} {'LIMIT':>12} {'WINDOW':<7} {'RESERVE':>9} {'USED':>12} {'REMAINING':>12} {'USED%':>6}  "
          f"{'NEXT CREDITS BACK':<25}  {'STATE':<32} {'PARKED':>6}  {'ORG USAGE':<21}  BULK Q-JOBS/BATCHES LEFT")
    for row in rows:
        if "unreadable" in row:
            print(f"{row['tenant']:<20} UNREADABLE: {row['unreadable']}")
            continue
        valid = row["limit"] is not None
        limit = f"{row['limit']:,}" if valid else str(row["limit_state"]).upper()
        reserve = f"{row['reserve']:,}" if valid else "-"
        percent = "-" if row["percent_used"] is None else f"{row['percent_used']:.1f}"
        org = f"{row['org_api_usage']:,}/{row['org_api_max']:,}" if row["org_api_max"] else "-"
        print(f"{row['tenant']:<20} {limit:>12} {row['window']:<7} {reserve:>9} {row['used']:>12,} "
              f"{row['remaining']:>12,} {percent:>6}  {row['resets_at']:<25}  {_state(row):<32} "
              f"{row['parked_jobs']:>6}  {org:<21}  {_bulk_column(row)}")
        if row["config_error"]:
            print(f"{'':<20} invalid: {row['config_error']}")
    if not rows:
        print("no tenants configured: set one with `crmsync quota set TENANT LIMIT`")


def _warn_if_evicting(client: redis.Redis) -> None:
    """Say on stderr when Redis may evict credit windows, naming its policy, or when it cannot be read."""
    try:
        warning = eviction_warning(maxmemory_policy(client))
    except redis.RedisError as exc:
        warning = f"cannot read Redis's maxmemory-policy (INFO memory): {type(exc).__name__}: {exc}"
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> int:
    bucket = connect_bucket()
    print_status(bucket, as_json=args.json)
    _warn_if_evicting(bucket.redis)  # after the rows: an unreachable Redis is print_status's error to report
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``status`` command."""
    status = add_command(commands, "status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)
