"""``crmsync status``: one row per tenant (quota with its window mode and reserve, pause, parked jobs, org usage,
Bulk API budgets), the tenants whose share of their limit used is highest first, a page of them (``--limit``, 50
by default; a line on stderr says how many more there are) or the ones asked for (``--tenant``). A tenant whose
config or counters are garbage is listed as invalid with the reason, ahead of the others (it is granted nothing,
as one whose credits are used up). A Redis that may evict credit windows (``maxmemory-policy`` other than
``noeviction``) is named in a warning on stderr.

Cheap at 100,000 tenants: the buckets of all are read (to sort them) through the metering script in pipelined
chunks (``worker.metrics.reads``), one command a tenant, and only the page's rows read the rest, pipelined too;
on a Redis Cluster as on one Redis."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from quota.bucket import CreditBucket, LimitState, Status
from quota.errors import InvalidInput, QuotaUnavailable
from quota.reading import Reading
from quota.replies import text
from quota.validation import validate_tenant
from worker import keys
from worker.cli import Subcommands, add_command
from worker.cli.bucket import connect_bucket, status_dict
from worker.eviction import eviction_warning
from worker.jobs.parking import PauseState
from worker.metrics.reads import Client, ensure_meter, meters, pipelined, raw_replies, redis_policies, registry
from worker.salesforce import bulk_limits
from worker.salesforce.session import OrgUsage

__all__ = ["DEFAULT_LIMIT", "Page", "print_status", "register", "status_page", "tenant_rows"]

#: Rows ``crmsync status`` shows unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 50

_STATES: dict[int, LimitState] = {0: "ok", 1: "unset", 2: "invalid"}
_CONFIG_FIELDS = ("limit", "reset_at")
_ORG_FIELDS = ("used", "max", "at")


@dataclass(frozen=True)
class Page:
    """The rows shown and how many tenants there were to show (``total - len(rows)`` were left out)."""

    rows: list[dict[str, Any]]
    total: int

    @property
    def hidden(self) -> int:
        """Tenants left out by the limit."""
        return self.total - len(self.rows)


def tenant_rows(bucket: CreditBucket, *, tenants: Sequence[str] | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """The quota status, pause state, parked jobs, org's reported usage and Bulk API budgets of every configured
    tenant (or of ``tenants``), highest share of the limit used first, at most ``limit`` of them."""
    return status_page(bucket, tenants=tenants, limit=limit).rows


def status_page(bucket: CreditBucket, *, tenants: Sequence[str] | None = None, limit: int | None = None,
                chunk: int = 1000) -> Page:
    """``tenant_rows`` with the number of tenants there were. Raises ``QuotaUnavailable`` when Redis cannot be
    read; a tenant whose keys hold the wrong type is a row with ``unreadable`` and the error."""
    client = raw_replies(bucket.redis)
    try:
        names = list(dict.fromkeys(tenants)) if tenants is not None else registry(client)[0]
        ensure_meter(client)
        order = _ranked(list(meters(client, names, bucket._now_arg(), chunk)))
        shown = order if limit is None or limit <= 0 else order[:limit]
        rows = [_row(bucket, tenant, reading, replies)
                for (tenant, reading), (_, replies) in zip(shown, pipelined(client, [t for t, _ in shown],
                                                                                 _detail_commands, chunk),
                                                           strict=True)]
    except redis.RedisError as exc:
        raise QuotaUnavailable(f"credit bucket unavailable: {type(exc).__name__}: {exc}") from exc
    finally:
        if client is not bucket.redis:
            client.close()
    return Page(rows, len(order))


def _ranked(read: list[tuple[str, Any]]) -> list[tuple[str, Reading | Exception]]:
    """The tenants by share of the limit used, highest first: those that cannot be granted anything because
    their config or counters are garbage (or cannot be read) first, those without a limit last, then by id."""
    ranked: list[tuple[tuple[int, float, str], str, Reading | Exception]] = []
    for tenant, reply in read:
        reading = reply if isinstance(reply, Reading) else None
        if reading is None:
            error = reply if isinstance(reply, Exception) else redis.ResponseError(f"unexpected meter reply {reply!r}")
            ranked.append(((0, 0.0, tenant), tenant, error))
        elif reading.state == 0 and reading.limit:
            ranked.append(((1, -reading.used / reading.limit, tenant), tenant, reading))
        else:
            ranked.append(((0 if reading.state == 2 else 2, 0.0, tenant), tenant, reading))
    ranked.sort(key=lambda entry: entry[0])
    return [(tenant, reading) for _, tenant, reading in ranked]


def _detail_commands(tenant: str) -> list[tuple[Any, ...]]:
    return [("HMGET", keys.config(tenant), *_CONFIG_FIELDS), ("HGETALL", keys.pause(tenant)),
            ("ZCARD", keys.parked(tenant)), ("ZCARD", keys.parked_essential(tenant)),
            ("HMGET", keys.org_usage(tenant), *_ORG_FIELDS), ("HGETALL", keys.bulk_budget(tenant))]


def _unreadable(tenant: str, error: Exception) -> dict[str, Any]:
    wrapped = QuotaUnavailable(f"credit bucket unavailable: {type(error).__name__}: {error}")
    return {"tenant": tenant, "unreadable": f"{type(wrapped).__name__}: {wrapped}"}


def _row(bucket: CreditBucket, tenant: str, reading: Reading | Exception, replies: list[Any]) -> dict[str, Any]:
    config, pause, parked, essential, org, bulk = replies
    if isinstance(reading, Exception):
        return _unreadable(tenant, reading)
    for reply in (config, pause, parked, essential, org):
        if isinstance(reply, Exception):  # a key written by hand with the wrong type: this tenant only
            return _unreadable(tenant, reply)
    if reading.state == 2:
        row = status_dict(bucket.status(tenant))  # invalid: the bucket words what is wrong (rare, one each)
    else:
        row = status_dict(Status(
            tenant=tenant, limit=reading.limit if reading.valid else None, limit_state=_STATES[reading.state],
            used=reading.used, remaining=reading.remaining, resets_at=datetime.fromtimestamp(reading.resets_at, UTC),
            reset_at=text(config[1]) or "00:00", raw_limit=text(config[0]), window=reading.mode,
            reserve=reading.reserve))
    state = PauseState.parse(tenant, pause)
    usage = OrgUsage.parse(org)
    row.update(
        paused=state is not None,
        pause_reason=state.reason if state else None,
        pause_scope=state.scope if state else None,
        paused_since=state.since if state else None,
        parked_jobs=int(parked) + int(essential),
        org_api_usage=usage.used if usage else None,
        org_api_max=usage.max if usage else None,
    )
    row.update(_bulk_status(bulk))
    return row



def _bulk_status(reply: Any) -> dict[str, Any]:
    """``bulk``: the Bulk API budgets last read for ``tenant``, ``{name: {"remaining", "max"}, "read_at": iso}``
    (``None`` until a job first reads them); a hash that cannot be read is ``None`` with ``bulk_unreadable``."""
    if isinstance(reply, Exception):  # a key of the wrong type: this field only
        return {"bulk": None, "bulk_unreadable": f"{type(reply).__name__}: {reply}"}
    budgets, at = bulk_limits.parse(reply)
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


def print_status(bucket: CreditBucket, *, as_json: bool = False, tenants: Sequence[str] | None = None,
                 limit: int | None = None) -> Page:
    """Print ``crmsync status``: the page of ``status_page`` as a table or JSON, and on stderr how many tenants
    the limit left out, if any. Returns the page."""
    page = status_page(bucket, tenants=tenants, limit=limit)
    _print_rows(page.rows, as_json=as_json)
    if page.hidden:
        print(f"{page.hidden:,} more of {page.total:,} tenants not shown (highest share of the limit used first; "
              "--limit 0 shows all, --tenant T one)", file=sys.stderr)
    return page


def _print_rows(rows: list[dict[str, Any]], *, as_json: bool) -> None:
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


def _warn_if_evicting(client: Client) -> None:
    """Say on stderr when Redis may evict credit windows, naming its policy (on a Redis Cluster, each node's that
    may), or when it cannot be read."""
    try:
        warnings = [(node, eviction_warning(policy)) for node, policy in redis_policies(client)]
    except redis.RedisError as exc:
        warnings = [("", f"cannot read Redis's maxmemory-policy (INFO memory): {type(exc).__name__}: {exc}")]
    for node, warning in warnings:
        if warning:
            print(f"warning: {f'node {node}: ' if node else ''}{warning}", file=sys.stderr)


def _tenant(value: str) -> str:
    """A ``--tenant`` value: a tenant id, checked as every command checks one (exit 2 otherwise)."""
    validate_tenant(value)
    return value


def _cmd_status(args: argparse.Namespace) -> int:
    tenants = [_tenant(t) for t in args.tenant] if args.tenant else None
    if args.limit < 0:
        raise InvalidInput(f"--limit must be 0 (all) or more, got {args.limit}")
    bucket = connect_bucket()
    print_status(bucket, as_json=args.json, tenants=tenants, limit=args.limit)
    _warn_if_evicting(bucket.redis)  # after the rows: an unreachable Redis is print_status's error to report
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``status`` command."""
    status = add_command(commands, "status")
    status.add_argument("--json", action="store_true", help="the same rows as a JSON list")
    status.add_argument("--tenant", action="append", metavar="T", default=[],
                        help="only this tenant (repeat for several), configured or not")
    status.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help=f"at most N rows, highest share of the limit used first (default {DEFAULT_LIMIT}; "
                             "0: all); stderr says how many more there are")
    status.set_defaults(handler=_cmd_status)
