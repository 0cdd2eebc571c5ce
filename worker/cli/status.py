"""``crmsync status`` (one row per tenant: quota, pause, parked jobs, org usage) and ``crmsync resume``."""

from __future__ import annotations

import argparse
import json
from typing import Any

import redis

from quota.bucket import CreditBucket
from quota.errors import QuotaUnavailable
from quota.validation import validate_tenant
from worker.cli.quota import connect_bucket, status_dict
from worker.jobs.parking import PauseStore
from worker.salesforce.session import OrgUsage

__all__ = ["print_status", "register", "tenant_rows"]


def tenant_rows(bucket: CreditBucket) -> list[dict[str, Any]]:
    """Every configured tenant's quota status, pause state, parked jobs and its org's reported usage."""
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
        paused_since=pause.since if pause else None,
        parked_jobs=pauses.parked_count(tenant),
        org_api_usage=usage.used if usage else None,
        org_api_max=usage.max if usage else None,
    )
    return row


def print_status(bucket: CreditBucket, *, as_json: bool = False) -> None:
    """Print ``crmsync status``."""
    rows = tenant_rows(bucket)
    if as_json:
        print(json.dumps(rows))
        return
    print(f"{'TENANT':<20} {'LIMIT':>12} {'USED':>12} {'REMAINING':>12} {'USED%':>6}  {'NEXT RESET':<25}  "
          f"{'STATE':<24} {'PARKED':>6}  ORG USAGE")
    for row in rows:
        if "unreadable" in row:
            print(f"{row['tenant']:<20} UNREADABLE: {row['unreadable']}")
            continue
        limit = f"{row['limit']:,}" if row["limit"] is not None else str(row["limit_state"]).upper()
        percent = "-" if row["percent_used"] is None else f"{row['percent_used']:.1f}"
        state = f"paused: {row['pause_reason']}" if row["paused"] else "running"
        org = f"{row['org_api_usage']:,}/{row['org_api_max']:,}" if row["org_api_max"] else "-"
        print(f"{row['tenant']:<20} {limit:>12} {row['used']:>12,} {row['remaining']:>12,} {percent:>6}  "
              f"{row['resets_at']:<25}  {state:<24} {row['parked_jobs']:>6}  {org}")
    if not rows:
        print("no tenants configured: set one with `crmsync quota set TENANT LIMIT`")


def _cmd_status(args: argparse.Namespace) -> int:
    print_status(connect_bucket(), as_json=args.json)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from worker.jobs.resume import Resumer, send_parked  # noqa: PLC0415 (binds the broker only for this command)
    from worker.jobs.runtime import Runtime, notification_center  # noqa: PLC0415
    from worker.jobs.sink import JsonlSink  # noqa: PLC0415

    validate_tenant(args.tenant)
    bucket = connect_bucket()
    runtime = Runtime(redis=bucket.redis, sink=JsonlSink("."), notifier=notification_center())
    pauses = runtime.pauses
    if pauses.get(args.tenant) is None and pauses.parked_count(args.tenant) == 0:
        print(f"{args.tenant}: not paused, nothing parked")
        return 0
    resumer = Resumer(bucket.redis, bucket, pauses, send_parked, runtime.notifier)
    sent = resumer.resume(args.tenant, by="cli")
    print(f"{args.tenant}: resumed, {sent} parked jobs queued again")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status`` and ``resume`` subcommands."""
    status = commands.add_parser("status", help="one row per tenant: credits, pause, parked jobs, org usage")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    resume = commands.add_parser("resume", help="resume a paused tenant now and queue its parked jobs again")
    resume.add_argument("tenant")
    resume.set_defaults(handler=_cmd_resume)
