"""Wall time of the quick ``crmsync`` commands against a bare Python that imports redis and pings.

``crmsync --help`` and ``crmsync quota show TENANT`` (the installed script, on a real Redis) against the
reference ``python -c "import redis, argparse; redis.Redis.from_url(URL).ping()"``: the least any command
that talks to Redis can cost. Each is a fresh process, as when an admin or a script runs it. The three run
interleaved (A, B, reference, A, B, reference, ...) so that they share the machine's noise; each figure is
the median of its runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import row
from quota import CreditBucket
from worker.devstack.redis_server import redis_url_or_embedded

RUNS = 7
TARGET_RATIO = 1.5
TENANT = "cli-bench"
CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


def _seconds(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run of ``command``, which must succeed."""
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def measure(url: str, runs: int = RUNS) -> dict[str, float]:
    """Median seconds of each command over ``runs`` interleaved rounds, after one untimed round."""
    commands = {
        "crmsync --help": [CRMSYNC, "--help"],
        f"crmsync quota show {TENANT}": [CRMSYNC, "quota", "show", TENANT],
        "reference": [sys.executable, "-c", f"import redis, argparse; redis.Redis.from_url({url!r}).ping()"],
    }
    env = {**os.environ, "REDIS_URL": url}
    for command in commands.values():  # untimed: bytecode caches written, files in the page cache
        _seconds(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(_seconds(command, env))
    return {name: statistics.median(samples) for name, samples in times.items()}


def main() -> None:
    """Print each command's median and its ratio to the reference."""
    with redis_url_or_embedded() as url:
        bucket = CreditBucket.from_url(url)
        if bucket.status(TENANT).limit_state == "unset":
            bucket.set_limit(TENANT, 100_000, actor="bench")
        bucket.redis.close()
        medians = measure(url)
    reference = medians.pop("reference")
    print(f"crmsync command wall time (fresh processes, median of {RUNS} interleaved runs)")
    row("reference: import redis, argparse; ping", f"{reference * 1000:.0f} ms", "1.00")
    for name, seconds in medians.items():
        ratio = seconds / reference
        verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
        row(name, f"{seconds * 1000:.0f} ms", f"{ratio:.2f}x reference (target <= {TARGET_RATIO}x): {verdict}")


if __name__ == "__main__":
    main()
