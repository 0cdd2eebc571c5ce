"""The pull checkpoint's bookkeeping: the watermark moves only when a read completes."""

from __future__ import annotations

import redis

from worker.jobs.pull import PullCheckpoint


def rec(record_id: str, stamp: str) -> dict[str, str]:
    return {"Id": record_id, "SystemModstamp": stamp}


A = "2024-05-07T22:07:19.000+0000"
B = "2024-05-07T22:07:20.000+0000"
NEXT = "/services/data/v59.0/query/01gRO0000016PIAYA2-2000"


def test_watermark_moves_when_the_read_completes() -> None:
    cp = PullCheckpoint(connection_id="c1")
    cp.advance([rec("1", A), rec("2", B)], next_url="/services/data/v59.0/query/01g-2")
    assert (cp.watermark, cp.next_url, cp.run_high) == (None, "/services/data/v59.0/query/01g-2", B)
    cp.advance([rec("3", B)], next_url=None)
    assert (cp.watermark, cp.boundary, cp.next_url, cp.run_high) == (B, {"2": B, "3": B}, None, None)


def test_an_empty_read_keeps_the_watermark() -> None:
    cp = PullCheckpoint(connection_id="c1", watermark=A, boundary={"1": A})
    cp.advance([], next_url=None)
    assert (cp.watermark, cp.boundary) == (A, {"1": A})


def test_checkpoint_round_trips_and_is_dropped_for_another_connection(redis_client: redis.Redis) -> None:
    cp = PullCheckpoint(connection_id="c1", watermark=A, boundary={"1": A}, next_url=NEXT, run_high=B,
                        run_boundary={"2": B})
    cp.save(redis_client, "acme", "Lead")
    assert PullCheckpoint.load(redis_client, "acme", "Lead", "c1") == cp
    assert PullCheckpoint.load(redis_client, "acme", "Lead", "c2") == PullCheckpoint(connection_id="c2")


def test_unreadable_checkpoint_starts_afresh(redis_client: redis.Redis) -> None:
    redis_client.hset("crmsync:{acme}:pull:Lead", "state", "{not json")
    assert PullCheckpoint.load(redis_client, "acme", "Lead", "c1") == PullCheckpoint(connection_id="c1")
