"""``crmsync notifications``: recent notifications, newest first."""

from __future__ import annotations

import argparse
import json

from quota.errors import InvalidInput
from quota.validation import validate_tenant
from worker.cli import Subcommands, add_command
from worker.cli.support import cli_redis
from worker.notifications.center import recent

__all__ = ["register"]

_MAX_LIMIT = 1000


def _cmd_notifications(args: argparse.Namespace) -> int:
    if args.tenant is not None:
        validate_tenant(args.tenant)
    if not 1 <= args.limit <= _MAX_LIMIT:
        raise InvalidInput(f"invalid --limit {args.limit}: use 1 to {_MAX_LIMIT}")
    with cli_redis("Redis") as client:
        found = recent(client, args.tenant, limit=args.limit)
    if args.json:
        print(json.dumps([n.to_json() for n in found]))
        return 0
    if not found:
        print("no notifications" + (f" for {args.tenant}" if args.tenant else ""))
    for n in found:
        print(f"{n.at.isoformat(timespec='seconds')}  {n.kind:<18} {n.tenant:<20} {n.message}")
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``notifications`` command."""
    listing = add_command(commands, "notifications")
    listing.add_argument("tenant", nargs="?", help="only this tenant's")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=20, help=f"how many (1-{_MAX_LIMIT}, default 20)")
    listing.set_defaults(handler=_cmd_notifications)
