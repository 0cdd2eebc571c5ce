"""Run every benchmark: ``python -m bench`` (``make bench``)."""

from __future__ import annotations

import importlib

BENCHMARKS = [
    "bench.bucket_bench",
    "bench.emulator_bench",
    "bench.credits_bench",
    "bench.jobs_bench",
    "bench.resume_bench",
    "bench.cli_bench",
    "bench.scheduler_bench",
    "bench.scale_bench",
    "bench.cluster_bench",
]


def main() -> None:
    """Run each benchmark module's ``main()`` in turn."""
    for name in BENCHMARKS:
        importlib.import_module(name).main()
        print()


if __name__ == "__main__":
    main()
