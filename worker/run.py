"""``crmsync run``: the main job on embedded defaults (``make run``).

With ``REDIS_URL`` unset it starts its own Redis on a free loopback port and stops it on exit. It sets up a
demo tenant (unless one is configured already) and prints ``crmsync status``.
"""

from __future__ import annotations

import argparse
import os

from quota.bucket import CreditBucket
from quota.embedded_redis import redis_url_or_embedded
from worker.status_cli import print_status

__all__ = ["register"]

DEMO_TENANT = "demo"
DEMO_LIMIT = 100_000
DEMO_SPENT = 1_234


def _cmd_run(args: argparse.Namespace) -> int:
    with redis_url_or_embedded() as url:
        embedded = not os.environ.get("REDIS_URL")
        print(f"Redis: {'embedded server at ' if embedded else ''}{url}")
        bucket = CreditBucket.from_url(url)
        if bucket.status(DEMO_TENANT).limit_state == "unset":
            bucket.set_limit(DEMO_TENANT, DEMO_LIMIT, actor="crmsync run")
            bucket.take(DEMO_TENANT, DEMO_SPENT)
        print_status(bucket)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` subcommand."""
    run = commands.add_parser("run", help="run crmsync on embedded defaults (what `make run` does)")
    run.set_defaults(handler=_cmd_run)
