"""``crmsync schedule set|remove|list``: periodic pulls per tenant and object, each at a priority."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis

from worker.cli import Subcommands, add_command
from worker.cli.support import cli_redis
from worker.enqueue import active_pull
from worker.errors import EXIT_FAILURE
from worker.jobs.parking import PauseStore
from worker.jobs.priority import check_priority
from worker.scheduling.schedules import Schedule, ScheduleStore, format_interval, parse_interval

__all__ = ["register", "schedule_rows"]


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def schedule_rows(client: redis.Redis, now: float) -> list[dict[str, Any]]:
    """Every schedule as plain JSON-able values, with its active pull and whether its tenant's pause holds its
    pulls (an essential schedule goes on while only normal jobs are paused)."""
    pauses = PauseStore(client)
    rows = []
    for s in ScheduleStore(client).all():
        active = pause_reason = None
        if not s.error:
            active = active_pull(client, s.tenant, s.sobject, s.priority)
            pause = pauses.get(s.tenant)
            pause_reason = pause.reason if pause is not None and pause.holds(s.priority) else None
        rows.append({
            "tenant": s.tenant, "object": s.sobject,
            "every": None if s.interval is None else format_interval(s.interval), "interval_s": s.interval,
            "next_due": _when(s.due), "next_due_epoch": s.due,
            "overdue_s": None if s.due is None else max(0.0, round(now - s.due, 3)),
            "priority": s.priority, "active_pull": active, "paused": pause_reason is not None,
            "pause_reason": pause_reason, "error": s.error or None,
        })
    return rows


def _relative(due: float | None, now: float) -> str:
    if due is None:
        return "never (no due time)"
    seconds = int(due - now)
    if seconds <= 0:
        return "now" if seconds > -60 else f"overdue {format_interval(-seconds // 60 * 60 or 60)}"
    return f"in {seconds // 60}m" if seconds >= 60 else f"in {seconds}s"


def _cmd_set(args: argparse.Namespace) -> int:
    # Refused before anything is written.
    interval = parse_interval(args.every)
    priority = None if args.priority is None else check_priority(args.priority)
    with cli_redis("schedules") as client:
        schedule: Schedule = ScheduleStore(client).set(args.tenant, args.object, interval, priority)
    print(f"{schedule.member}: pull every {format_interval(interval)} ({schedule.priority}), "
          f"next due {_when(schedule.due)}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    with cli_redis("schedules") as client:
        removed = ScheduleStore(client).remove(args.tenant, args.object)
    if not removed:
        print(f"crmsync: error: no schedule for {args.tenant}/{args.object}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.tenant}/{args.object}: schedule removed")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    now = time.time()
    with cli_redis("schedules") as client:
        rows = schedule_rows(client, now)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no schedules (add one with `crmsync schedule set TENANT OBJECT --every 15m`)")
        return 0
    print(f"{'TENANT':<20} {'OBJECT':<24} {'EVERY':<6} {'PRIORITY':<9} {'NEXT DUE':<38} {'ACTIVE PULL':<33} "
          "PAUSED")
    for r in rows:
        due = f"{r['next_due'] or '-'} ({_relative(r['next_due_epoch'], now)})"
        paused = f"yes ({r['pause_reason']})" if r["paused"] else "no"
        line = (f"{r['tenant']:<20} {r['object']:<24} {r['every'] or '-':<6} {r['priority']:<9} {due:<38} "
                f"{r['active_pull'] or '-':<33} ")
        print(line + (f"INVALID: {r['error']}" if r["error"] else paused))
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``schedule`` command."""
    schedule = add_command(commands, "schedule")
    sub = schedule.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")

    set_ = sub.add_parser("set", help="pull an object for a tenant at an interval (a new schedule is due now)")
    set_.add_argument("tenant")
    set_.add_argument("object", help="sObject API name, e.g. Lead")
    set_.add_argument("--every", required=True, metavar="INTERVAL",
                      help="e.g. 90s, 15m, 2h, 1d (at least 1m, at most 30d)")
    set_.add_argument("--priority", metavar="essential|normal",
                      help="the priority its pulls are queued with: essential pulls may spend the tenant's reserve "
                           "(default: the schedule's current priority, normal for a new one)")
    set_.set_defaults(handler=_cmd_set)

    remove = sub.add_parser("remove", help="stop pulling an object for a tenant on a schedule")
    remove.add_argument("tenant")
    remove.add_argument("object")
    remove.set_defaults(handler=_cmd_remove)

    list_ = sub.add_parser("list", help="schedules, priorities, next due times, active pulls and paused tenants")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_cmd_list)
