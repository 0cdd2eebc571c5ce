"""``crmsync connect`` and ``crmsync connections``: tenants' Salesforce org connections."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager

from worker.cli.support import cli_redis
from worker.salesforce.connections import Connection, ConnectionStore

__all__ = ["connection_store", "register"]


@contextmanager
def connection_store() -> Iterator[ConnectionStore]:
    """A store on ``REDIS_URL`` with short timeouts, so an unreachable Redis fails fast instead of hanging.

    A Redis error inside the block becomes a one-line ``CommandError`` (exit 1).
    """
    with cli_redis("connection store") as client:
        yield ConnectionStore(client)


def _cmd_connect(args: argparse.Namespace) -> int:
    with connection_store() as store:
        conn = store.connect(
            args.tenant, environment=args.environment, login_url=args.login_url, client_id=args.client_id,
            client_secret_file=args.client_secret_file, client_secret_env=args.client_secret_env,
            private_key_file=args.private_key_file, username=args.username,
            refresh_token_file=args.refresh_token_file, ca_bundle=args.ca_bundle,
        )
    print(f"{conn.tenant}: connected to {conn.environment} org at {conn.login_url} "
          f"({conn.grant} grant, connection {conn.connection_id})")
    return 0


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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``connect`` and ``connections`` subcommands."""
    connect = commands.add_parser(
        "connect", help="connect a tenant to its Salesforce org (replaces its current connection)",
        description="Connect TENANT to one Salesforce org. Pick the grant by the credentials you give: "
                    "a client secret (client credentials), a private key and username (JWT bearer), or a refresh "
                    "token with an optional client secret. Secrets are read from files or the environment and "
                    "only their location is stored. A tenant once connected to production cannot go back to a "
                    "sandbox.",
    )
    connect.add_argument("tenant")
    connect.add_argument("--environment", required=True, choices=["sandbox", "production"])
    connect.add_argument("--login-url", required=True, metavar="URL",
                         help="https login host, e.g. https://login.salesforce.com or https://test.salesforce.com")
    connect.add_argument("--client-id", required=True, metavar="ID", help="the connected app's consumer key")
    connect.add_argument("--client-secret-file", metavar="FILE", help="file holding the consumer secret")
    connect.add_argument("--client-secret-env", metavar="NAME",
                         help="environment variable holding the consumer secret (must be set for the worker too)")
    connect.add_argument("--private-key-file", metavar="FILE", help="PEM private key for the JWT bearer grant")
    connect.add_argument("--username", metavar="USER", help="Salesforce username for the JWT bearer grant")
    connect.add_argument("--refresh-token-file", metavar="FILE", help="file holding a refresh token")
    connect.add_argument("--ca-bundle", metavar="FILE", help="CA certificates for HTTPS (default: system CAs)")
    connect.set_defaults(handler=_cmd_connect)

    listing = commands.add_parser("connections", help="list tenants' org connections (never secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_connections)
