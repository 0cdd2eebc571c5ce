"""Scheduler processes for the multi-process tests: ``python -m tests.scheduler.procs MODE ...``.

``lockstep NAME``: a scheduler whose clock is a Redis key and which ticks once per ``go`` message, so a test
can make two real processes tick at the same moment, round after round, and read back what each did.
``doomed NAME``: the same in batches of 4, which kills itself (SIGKILL) once it has claimed its second batch.
``cli ARGS...``: the real ``crmsync scheduler`` from ``worker.cli.scheduler`` (e.g. ``scheduler --tick 0.05``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import cast

import redis

from worker.cli.scheduler import register
from worker.scheduling import tick
from worker.scheduling.scheduler import Scheduler

CLOCK = "crmsync:test:clock"
READY = "crmsync:test:ready"
DONE = "crmsync:test:done"


def go_key(name: str) -> str:
    """The list a lockstep process waits on for its next ``go`` (a round number) or ``stop``."""
    return f"crmsync:test:go:{name}"


def doomed(name: str) -> int:
    """``lockstep`` in batches of 4, dying by SIGKILL right before its second batch would be sent."""
    checks = 0

    def check_or_die(self: tick.TickPass) -> None:
        nonlocal checks
        checks += 1
        if checks == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        self.s.renew_lease()

    tick.TickPass._check_lease = check_or_die  # type: ignore[method-assign]
    return lockstep(name, batch=4)


def lockstep(name: str, batch: int = 1000) -> int:
    """Tick once per ``go``; report each pass on ``DONE``."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    scheduler = Scheduler(client, instance_id=name, clock=lambda: float(cast(str, client.get(CLOCK))),
                          tick_s=1, lease_ttl_s=60, batch=batch)
    client.rpush(READY, name)
    while True:
        item = client.blpop([go_key(name)], timeout=120)
        if item is None or item[1] == "stop":
            return 0
        report = scheduler.tick()
        client.rpush(DONE, json.dumps({
            "instance": name, "round": int(item[1]), "leader": report.leader, "enqueued": report.enqueued,
            "claimed": report.claimed, "lost_lease": report.lost_lease,
        }))


def cli(argv: list[str]) -> int:
    """Run one of our subcommands as ``crmsync`` would (minus the other areas' commands)."""
    parser = argparse.ArgumentParser(prog="crmsync")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    sys.exit(lockstep(rest[0]) if mode == "lockstep" else doomed(rest[0]) if mode == "doomed" else cli(rest))
