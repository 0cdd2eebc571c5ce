"""Eight processes hammering one bucket get exactly its size between them."""

from __future__ import annotations

import multiprocessing
import random

import redis

from quota import CreditBucket
from tests.conftest import T0, FakeClock

LIMIT = 100_000
PROCESSES = 8


def _drain(url: str, seed: int) -> int:
    # A fixed clock: a real midnight during the test must not open a second window.
    bucket = CreditBucket.from_url(url, clock=FakeClock(T0))
    rng = random.Random(seed)
    got = 0
    while True:
        n = rng.choice((1, 2, 3, 7))
        if bucket.take("acme", n).granted:
            got += n
        elif not bucket.take("acme", 1).granted:
            return got
        else:
            got += 1


def test_eight_processes_get_exactly_the_limit(redis_url: str, redis_client: redis.Redis) -> None:
    CreditBucket.from_url(redis_url, clock=FakeClock(T0)).set_limit("acme", LIMIT, actor="test")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        per_process = pool.starmap(_drain, [(redis_url, seed) for seed in range(PROCESSES)])
    assert sum(per_process) == LIMIT
    status = CreditBucket.from_url(redis_url, clock=FakeClock(T0)).status("acme")
    assert (status.used, status.remaining) == (LIMIT, 0)
