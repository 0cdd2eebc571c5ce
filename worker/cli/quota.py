"""Admin commands for quota config: ``crmsync quota set|show|history``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from quota.bucket import AuditEntry, Status
from worker.cli import Subcommands, add_command
from worker.cli.bucket import connect_bucket, status_dict
from worker.errors import EXIT_FAILURE
from worker.settings import actor

__all__ = ["register"]


def _countdown(when: datetime) -> str:
    seconds = max(0, int((when - datetime.now(UTC)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"in {hours}h{rest // 60:02d}m"


def _limit_text(status: Status) -> str:
    if status.limit_state == "ok":
        return f"{status.limit:,}"
    if status.limit_state == "unset":
        return "unset (no credits until a limit is set)"
    return f"INVALID config: {status.config_error} (no credits until fixed with `crmsync quota set`)"


def _print_show(status: Status) -> None:
    percent = status.percent_used
    used = f"{status.used:,}" + ("" if percent is None else f" ({percent:.1f}%)")
    back = f"{status.resets_at.isoformat()} ({_countdown(status.resets_at)})"
    rows = [
        ("tenant", status.tenant),
        ("limit", _limit_text(status)),
        ("used", used),
        ("remaining", f"{status.remaining:,}"
                      + (f" ({status.available:,} above the reserve)" if status.reserve else "")),
        ("reserve", f"{status.reserve:,} (kept for essential jobs)" if status.reserve else "none"),
    ]
    if status.window == "rolling":
        rows += [("window", "rolling: each credit comes back 24-25 hours after it was taken"),
                 ("next back", back if status.used else "nothing used in the last 24 hours")]
    else:
        rows += [("window", f"daily: every credit comes back at {status.reset_at} UTC"), ("next reset", back)]
    for name, value in rows:
        print(f"{name:<11} {value}")


def _invalid(status: Status) -> int:
    """Exit status for a tenant that grants nothing because of what is stored for it (said on stderr)."""
    if status.limit_state != "invalid":
        return 0
    print(f"crmsync: tenant {status.tenant!r} is invalid and gets no credits: {status.config_error}",
          file=sys.stderr)
    return EXIT_FAILURE


def _audit_dict(entry: AuditEntry) -> dict[str, Any]:
    return {"at": entry.at.isoformat(), "actor": entry.actor, "field": entry.field, "old": entry.old,
            "new": entry.new}


def _cmd_set(args: argparse.Namespace) -> int:
    status = connect_bucket().set_limit(args.tenant, args.limit, actor=args.actor, reset_at=args.reset_at,
                                        window=args.window, reserve=args.reserve)
    if status.limit_state == "ok":
        window = "rolling 24 hours" if status.window == "rolling" else f"reset {status.reset_at} UTC"
        reserve = f", reserve {status.reserve:,}" if status.reserve else ""
        print(f"{status.tenant}: limit {status.limit:,}{reserve}, {window}, {status.remaining:,} credits left; "
              f"next credits back at {status.resets_at.isoformat()}")
    return _invalid(status)


def _cmd_show(args: argparse.Namespace) -> int:
    status = connect_bucket().status(args.tenant)
    if args.json:
        print(json.dumps(status_dict(status)))
    else:
        _print_show(status)
    return _invalid(status)


def _cmd_history(args: argparse.Namespace) -> int:
    entries = connect_bucket().history(args.tenant)
    if args.json:
        print(json.dumps([_audit_dict(e) for e in entries]))
        return 0
    if not entries:
        print(f"{args.tenant}: no config changes recorded")
    for e in entries:
        print(f"{e.at.isoformat()}  {e.actor:<20} {e.field:<9} {e.old or '-'} -> {e.new}")
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``quota`` command."""
    quota = add_command(commands, "quota")
    sub = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")

    set_ = sub.add_parser("set", help="set a tenant's daily limit (a whole number >= 100,000), window and reserve")
    set_.add_argument("tenant")
    set_.add_argument("limit", help="CRM API daily limit: a whole number of at least 100,000")
    set_.add_argument("--reset-at", metavar="HH:MM",
                      help="daily window: UTC time of day the credits refill (default 00:00)")
    set_.add_argument("--window", metavar="daily|rolling",
                      help="daily: all credits back at the reset time; rolling: each back 24 hours after it was "
                           "taken, as Salesforce counts (default: keep; new tenants daily)")
    set_.add_argument("--reserve", metavar="N",
                      help="credits kept for essential jobs: normal jobs pause when only these are left "
                           "(0 <= N < limit; default: keep; new tenants 0)")
    set_.add_argument("--actor", default=actor(),
                      help="who makes the change, for the audit trail (default: $CRMSYNC_ACTOR or your user)")
    set_.set_defaults(handler=_cmd_set)

    show = sub.add_parser("show", help="limit, used, remaining, percent used and next reset")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cmd_show)

    history = sub.add_parser("history", help="audit trail of a tenant's config changes, newest first")
    history.add_argument("tenant")
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=_cmd_history)
