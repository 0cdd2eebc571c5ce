"""``crmsync connections``: tenants' Salesforce org connections, never their secrets."""

from __future__ import annotations

import argparse
import json

from worker.cli import Subcommands, add_command
from worker.cli.connection_store import connection_store
from worker.salesforce.connections import Connection

__all__ = ["register"]


def _row(conn: Connection) -> tuple[str, ...]:
    return (conn.tenant, conn.environment, conn.grant, "yes" if conn.ever_production else "no",
            conn.connected_at.isoformat(timespec="seconds"), conn.login_url, conn.client_id)


def _cmd_connections(args: argparse.Namespace) -> int:
    with connection_store() as store:
        connections = store.all()
    if args.json:
        print(json.dumps([c.to_json() for c in connections]))
        return 0
    if not connections:
        print("no tenants connected: connect one with `crmsync connect TENANT ...`")
        return 0
    header = ("TENANT", "ENVIRONMENT", "GRANT", "EVER-PROD", "CONNECTED-AT", "LOGIN-URL", "CLIENT-ID")
    rows = [header, *(_row(c) for c in connections)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``connections`` command."""
    listing = add_command(commands, "connections")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_connections)
