"""The bucket's own per-thread connections: threads, forks, hung-up and timed-out connections, close()."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator

import pytest
import redis

from quota import CreditBucket, QuotaUnavailable
from tests.conftest import FakeClock, wait_until

LIMIT = 100_000
NAME = "crmsync-meter-test"


@pytest.fixture
def bucket(redis_url: str, redis_client: redis.Redis, clock: FakeClock) -> Iterator[CreditBucket]:
    bucket = CreditBucket.from_url(redis_url, clock=clock, client_name=NAME, socket_timeout=5)
    bucket.set_limit("acme", LIMIT, actor="test")
    yield bucket
    bucket.close()


def _meter_clients(admin: redis.Redis) -> list[dict[str, str]]:
    return [c for c in admin.client_list() if c.get("name") == NAME and c.get("cmd") == "evalsha"]


def test_threads_draining_one_bucket_get_exactly_what_is_left(
    bucket: CreditBucket, redis_client: redis.Redis
) -> None:
    assert bucket.take("acme", LIMIT - 2_000).granted
    counts = [0] * 8

    def drain(i: int) -> None:
        while bucket.take("acme", 1).granted:
            counts[i] += 1

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 2_000
    assert bucket.status("acme").remaining == 0


@pytest.fixture
def parked_threads(bucket: CreditBucket) -> Iterator[threading.Event]:
    """Three threads that each took a credit and stay alive (holding their connections) until released."""
    release, took = threading.Event(), threading.Barrier(4)

    def take_and_park() -> None:
        bucket.take("acme", 1)
        took.wait()
        release.wait()

    threads = [threading.Thread(target=take_and_park) for _ in range(3)]
    for t in threads:
        t.start()
    took.wait()
    yield release
    release.set()
    for t in threads:
        t.join()


def test_each_thread_has_its_own_connection_until_it_ends(
    bucket: CreditBucket, redis_client: redis.Redis, parked_threads: threading.Event
) -> None:
    # The three threads' and the main thread's (set_limit read the bucket back).
    assert len(_meter_clients(redis_client)) == 4
    parked_threads.set()
    # A thread's connection goes with it: worker threads that come and go leak nothing.
    wait_until(lambda: len(_meter_clients(redis_client)) == 1, 30, "the ended threads' connections to close")


def test_a_connection_the_server_closed_is_replaced_before_it_is_used(
    bucket: CreditBucket, redis_client: redis.Redis
) -> None:
    assert bucket.take("acme", 1).granted
    (meter,) = _meter_clients(redis_client)
    assert redis_client.client_kill_filter(_id=meter["id"]) == 1
    grant = bucket.take("acme", 1)  # no spurious QuotaUnavailable for a connection that sat idle
    assert grant.granted
    assert grant.remaining == LIMIT - 2


def test_a_timed_out_reply_is_never_taken_for_the_next_one(redis_url: str, redis_client: redis.Redis) -> None:
    bucket = CreditBucket.from_url(redis_url, client_name=NAME, socket_timeout=0.3)
    bucket.set_limit("acme", LIMIT, actor="test")
    redis_client.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        with pytest.raises(QuotaUnavailable):
            bucket.take("acme", 1)
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    grant = bucket.take("acme", 1)
    # Whether or not the server ran the timed-out take, this reply is this take's own.
    assert grant.granted
    assert grant.remaining == bucket.status("acme").remaining
    bucket.close()


_forked: list[CreditBucket] = []  # a bucket does not pickle: children find the parent's in memory


def _take_in_child(n: int) -> int:
    return sum(_forked[0].take("acme", 1).granted for _ in range(n))


def test_a_forked_child_never_writes_to_its_parents_connection(bucket: CreditBucket) -> None:
    assert bucket.take("acme", 1).granted  # the parent's thread now holds a connection
    _forked[:] = [bucket]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        children = pool.map_async(_take_in_child, [300, 300])
        parent = _take_in_child(300)
        assert children.get(timeout=120) == [300, 300]
    assert parent == 300
    assert bucket.status("acme").used == 1 + 900


def test_close_closes_the_connections_of_every_thread(
    bucket: CreditBucket, redis_client: redis.Redis, parked_threads: threading.Event
) -> None:
    assert len(_meter_clients(redis_client)) == 4
    bucket.close()
    wait_until(lambda: not _meter_clients(redis_client), 30, "the server to see the connections close")
    assert bucket.take("acme", 1).granted  # and the bucket reconnects on its next take
