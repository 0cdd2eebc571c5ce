"""``crmsync emulator``: serve the local HTTPS Salesforce emulator (``emulator.cli`` runs it)."""

from __future__ import annotations

from pathlib import Path

from emulator.cli import run
from worker.cli import Subcommands, add_command

__all__ = ["register"]


def register(commands: Subcommands) -> None:
    """Add the ``emulator`` command."""
    parser = add_command(
        commands, "emulator",
        description="Serve a local HTTPS emulator of the Salesforce REST API (loopback only) until "
        "SIGTERM or SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: a free port)")
    parser.add_argument("--orgs", default="acme,globex",
                        help="comma-separated name[:production|sandbox], e.g. acme,acme-sandbox:sandbox "
                        "(default acme,globex)")
    parser.add_argument("--records", type=int, default=200, help="synthetic records per object (default 200)")
    parser.add_argument("--daily-limit", type=int, default=100_000,
                        help="API requests per org per rolling 24 hours (default 100000)")
    parser.add_argument("--token-ttl", type=float, default=7200.0,
                        help="access token lifetime in seconds (default 7200)")
    parser.add_argument("--ready-file", type=Path, help="write the ready JSON here once serving")
    parser.add_argument("--count-token-requests", action="store_true",
                        help="count OAuth token requests against the daily limit (default: free)")
    parser.add_argument("--bulk-rate", type=float, default=5000.0, metavar="RECORDS_PER_SECOND",
                        help="how fast Bulk API 2.0 jobs are processed (default 5000; 0: done at once)")
    parser.set_defaults(handler=run)
