"""What ``crmsync emulator`` runs: the Salesforce emulator in the foreground until SIGTERM or SIGINT.

Its options are defined in ``worker.cli.emulator``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from emulator.server import EmulatorServer, parse_org_spec
from quota.errors import InvalidInput

__all__ = ["run"]


def _checked(args: argparse.Namespace) -> list[str]:
    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"--port {args.port} is not between 0 and 65535")
    if args.records < 0 or args.daily_limit < 0:
        raise InvalidInput("--records and --daily-limit must be >= 0")
    if args.token_ttl <= 0:
        raise InvalidInput("--token-ttl must be > 0")
    if not 0 <= args.bulk_rate < float("inf"):
        raise InvalidInput("--bulk-rate must be a number >= 0")
    specs = [s.strip() for s in args.orgs.split(",") if s.strip()]
    if not specs:
        raise InvalidInput("--orgs names no org")
    names = []
    for spec in specs:
        try:
            names.append(parse_org_spec(spec)[0])
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    if len(set(names)) != len(names):
        raise InvalidInput("--orgs names an org twice")
    return specs


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; the ready file is written when serving and removed at exit."""
    specs = _checked(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = EmulatorServer(orgs=specs, records=args.records, daily_limit=args.daily_limit,
                                token_ttl=args.token_ttl, port=args.port,
                                count_token_requests=args.count_token_requests, bulk_rate=args.bulk_rate)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    try:
        try:
            server.start()
        except OSError as exc:
            raise InvalidInput(f"cannot serve on port {args.port}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if args.ready_file is not None:
            server.write_ready_file(args.ready_file)
        print(f"crmsync emulator: serving {', '.join(server.orgs)} on {server.base_url}", file=sys.stderr,
              flush=True)
        stop.wait()
    finally:
        server.stop()
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
