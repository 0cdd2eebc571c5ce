"""``crmsync connect``: connect a tenant to its Salesforce org."""

from __future__ import annotations

import argparse

from worker.cli import Subcommands, add_command
from worker.cli.connection_store import connection_store

__all__ = ["register"]


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


def register(commands: Subcommands) -> None:
    """Add the ``connect`` command."""
    connect = add_command(
        commands, "connect",
        description="Connect TENANT to one Salesforce org. Pick the grant by the credentials you give: "
                    "a client secret (client credentials), a private key and username (JWT bearer), or a refresh "
                    "token with an optional client secret. Secrets are read from files inside CRMSYNC_SECRET_DIRS "
                    "(default /run/secrets) or CRMSYNC_SECRET_* variables, and only their location is stored. "
                    "The login URL must be a Salesforce login host or one listed in CRMSYNC_LOGIN_HOSTS. A tenant "
                    "once connected to production cannot go back to a sandbox.",
    )
    connect.add_argument("tenant")
    connect.add_argument("--environment", required=True, choices=["sandbox", "production"])
    connect.add_argument("--login-url", required=True, metavar="URL",
                         help="https://login.salesforce.com, https://test.salesforce.com, "
                              "https://NAME.my.salesforce.com, or a host listed in CRMSYNC_LOGIN_HOSTS")
    connect.add_argument("--client-id", required=True, metavar="ID", help="the connected app's consumer key")
    connect.add_argument("--client-secret-file", metavar="FILE",
                         help="file holding the consumer secret, inside CRMSYNC_SECRET_DIRS")
    connect.add_argument("--client-secret-env", metavar="NAME",
                         help="CRMSYNC_SECRET_* variable holding the consumer secret (set for the worker too)")
    connect.add_argument("--private-key-file", metavar="FILE", help="PEM private key for the JWT bearer grant")
    connect.add_argument("--username", metavar="USER", help="Salesforce username for the JWT bearer grant")
    connect.add_argument("--refresh-token-file", metavar="FILE", help="file holding a refresh token")
    connect.add_argument("--ca-bundle", metavar="FILE", help="CA certificates for HTTPS (default: system CAs)")
    connect.set_defaults(handler=_cmd_connect)
