"""Helpers shared by the benchmarks: throughput of a callable in N processes, and printing figures."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

__all__ = ["row", "throughput"]

# A factory returns the operation to time; it runs inside each process so connections are per process.
OpFactory = Callable[..., Callable[[], Any]]


def _worker(factory: OpFactory, args: tuple[Any, ...], seconds: float, start: Any, out: Any) -> None:
    op = factory(*args)
    for _ in range(200):  # warm up: connect, load scripts
        op()
    start.wait()
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            op()
        count += 50
    out.put(count)


def throughput(factory: OpFactory, args: tuple[Any, ...], processes: int, seconds: float = 2.0) -> float:
    """Operations per second of ``factory(*args)()`` run in ``processes`` processes at once."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(processes)
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(factory, args, seconds, start, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    total: int = sum(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def row(label: str, value: str, note: str = "") -> None:
    """Print one aligned figure."""
    print(f"  {label:<46} {value:>16}  {note}")
