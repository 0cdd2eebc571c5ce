"""The pull checkpoint's bookkeeping: the watermark moves only when a read completes; what it stores for the next
request (a next page, a Bulk job and its locator) is used only in Salesforce's shape, else discarded."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import redis
from structlog.testing import capture_logs

from worker.errors import UnsafeRequest
from worker.jobs.pull import PullCheckpoint
from worker.salesforce.bulk import check_job_id, check_locator
from worker.salesforce.client import next_records_path


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


# -- what is read back from Redis before it goes into a request -------------------------------------------------

SALESFORCE_NEXT_URLS = [
    "/services/data/v63.0/query/01gRO0000016PIAYA2-500",  # Salesforce's REST API guide
    "/services/data/v63.0/query/01g5e00001AH2dOAAT-4000",  # its queryAll example (queryAll pages use /query/)
    "/services/data/v59.0/query/01gD0000002HU6K-2000",  # a 15-character locator
    "/services/data/v100.0/query/0r8xx00000000AAAAA-2000",  # a later version; the 0r8 locators of newer orgs
]
HOSTILE_NEXT_URLS = [
    ".evil.example/services/data/v59.0/query/01gRO0000016PIAYA2-500",
    "@evil.example/services/data/v59.0/query/01gRO0000016PIAYA2-500",
    ":443@evil.example/services/data/v59.0/query/01gRO0000016PIAYA2-500",
    "//evil.example/services/data/v59.0/query/01gRO0000016PIAYA2-500",
    "https://evil.example/services/data/v59.0/query/01gRO0000016PIAYA2-500",
    "/services/data/v59.0/query/../../../services/apexrest/x",
    "/services/data/v59.0/query/01gRO0000016PIAYA2-500/../../sobjects/Lead",
    "/services/data/v59.0/query/01gRO0000016PIAYA2-500@evil.example",
    "/services/data/v59.0/query/01gRO0000016PIAYA2-500?q=SELECT+Id+FROM+User",
    "/services/data/v59.0/query/01gRO0000016PIAYA2-500#x",
    "/services/data/v59.0/query/01gRO0000016PIAYA2-500\n",
    "/services/data/v59.0/query/01gRO0000016PIAY-500",  # 16 characters: no Salesforce id
    "/services/data/v59.0/query/01gRO0000016PIAYA2",  # no page offset
    "/services/data/v59.0/query/01gRO0000016PIAYA2-\u0665\u0660\u0660",  # digits, but not ASCII ones
    "/services/data/v59.0/sobjects/Lead/00Q000000000001AAA",
    "/services/data/v59.0/queryAll/01gRO0000016PIAYA2-500",
    "/services/data/vX/query/01gRO0000016PIAYA2-500",
    "services/data/v59.0/query/01gRO0000016PIAYA2-500",
    "",
]


@pytest.mark.parametrize("url", SALESFORCE_NEXT_URLS)
def test_next_records_urls_as_salesforce_writes_them_are_kept(url: str) -> None:
    assert next_records_path(url) == url


@pytest.mark.parametrize("url", [*HOSTILE_NEXT_URLS, 42, ["/services/data/v59.0/query/01gRO0000016PIAYA2-500"]])
def test_anything_else_is_not_a_next_records_url(url: object) -> None:
    with pytest.raises(UnsafeRequest, match="not a Salesforce next-records path"):
        next_records_path(url)


@pytest.mark.parametrize("url", [*HOSTILE_NEXT_URLS, 42, {"url": "x"}])
def test_a_stored_next_url_out_of_shape_is_discarded_with_the_reason(redis_client: redis.Redis,
                                                                     url: object) -> None:
    kept = PullCheckpoint(connection_id="c1", watermark=A, boundary={"1": A}, run_high=B, run_boundary={"2": B})
    redis_client.hset("crmsync:{acme}:pull:Lead", "state", json.dumps({**asdict(kept), "next_url": url}))
    with capture_logs() as logs:
        cp = PullCheckpoint.load(redis_client, "acme", "Lead", "c1")
    # The read goes on from what was delivered: the highest SystemModstamp and the Ids at it are kept.
    assert cp == kept
    assert [(e["event"], e["log_level"], e["part"], e["tenant"], e["object"]) for e in logs] == [
        ("checkpoint_discarded", "warning", "next_url", "acme", "Lead")]
    assert logs[0]["reason"].startswith("not a Salesforce next-records path: ")


@pytest.mark.parametrize("job_id", ["750R0000000zlh9IAA", "7505fEXAMPLE4C2AAM", "750R0000000zlh9"])
def test_bulk_job_ids_as_salesforce_writes_them_are_kept(job_id: str) -> None:
    assert check_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["../../sobjects/Lead", "750R0000000zlh9IAA/../../sobjects/Lead",
                                    "750R0000000zlh9IAA?x=1", "750R0000000zlh9IAA#", "001R0000000zlh9IAA",
                                    "750R0000000zlh9I", "750R0000000zlh9IAA\n", "", 750, None])
def test_anything_else_is_not_a_bulk_job_id(job_id: object) -> None:
    with pytest.raises(UnsafeRequest, match="not a Bulk API job id"):
        check_job_id(job_id)


@pytest.mark.parametrize(("locator", "ok"), [
    ("MTAwMDA", True), ("MjAwMDA=", True), ("a-b_c/d+e", True), ("x" * 256, True),
    ("x" * 257, False), ("a&maxRecords=1", False), ("a b", False), ("../x", False), ("", False), (5, False),
])
def test_bulk_results_locators(locator: object, ok: bool) -> None:
    if ok:
        assert check_locator(locator) == locator
    else:
        with pytest.raises(UnsafeRequest, match="not a Bulk API results locator"):
            check_locator(locator)


@pytest.mark.parametrize("bulk", [{"job_id": "../../sobjects/Lead"}, {"locator": "a&b"}, {"job_id": 7}])
def test_a_stored_bulk_read_out_of_shape_is_discarded_and_starts_again_where_it_began(
    redis_client: redis.Redis, bulk: dict[str, object],
) -> None:
    read = {"job_id": "750R0000000zlh9IAA", "since": A, "skip": {"1": A}, "polls": 3, "pages": 2,
            "locator": "MTAwMDA", "requests": 6, **bulk}
    redis_client.hset("crmsync:{acme}:pull:Lead", "state", json.dumps(
        {"connection_id": "c1", "watermark": A, "boundary": {"1": A}, "run_high": B, "run_boundary": {"2": B},
         "bulk": read}))
    with capture_logs() as logs:
        cp = PullCheckpoint.load(redis_client, "acme", "Lead", "c1")
    assert cp == PullCheckpoint(connection_id="c1", watermark=A, boundary={"1": A}, run_high=A, run_boundary={"1": A})
    assert [(e["event"], e["part"]) for e in logs] == [("checkpoint_discarded", "bulk")]


def test_a_stored_bulk_read_that_is_no_object_is_unreadable(redis_client: redis.Redis) -> None:
    redis_client.hset("crmsync:{acme}:pull:Lead", "state", json.dumps({"connection_id": "c1", "bulk": "750x"}))
    assert PullCheckpoint.load(redis_client, "acme", "Lead", "c1") == PullCheckpoint(connection_id="c1")
