"""Pulls against Salesforce's cursors and short pages: the emulator over HTTPS on an injected clock, the product's
client and metered session, a real Redis.

A query cursor lost mid-read (released when the user opened one too many, or expired while the pull was parked)
answers 400 ``INVALID_QUERY_LOCATOR``; the pull queries again from the highest SystemModstamp delivered and still
delivers every record exactly once, paying the refused request and the new query like every other. Pages of 200
(two long text fields selected) or fewer (the org's page cap) are simply more pages, and the REST estimate that
decides between REST and Bulk counts them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, cast

import pytest
import redis
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceMalformedRequest, SalesforceResourceNotFound
from structlog.testing import capture_logs

from emulator import EmulatorServer, OrgInfo
from quota import CreditBucket
from tests.emulator.conftest import FakeClock, session_for
from tests.worker.test_stored_urls import ListSink, salesforce
from worker.errors import SliceEnded
from worker.jobs.bulk import NO_BULK, BulkOptions
from worker.jobs.cost import bulk_pull_cost, rest_pull_cost
from worker.jobs.pull import PullCheckpoint, _locator_gone, run_pull
from worker.jobs.state import JobStore

CONNECTION = "conn-1"
LONG_TEXT = ["Name", "Notes__c", "Profile__c"]  # two long text areas: Salesforce pages such a query by 200
IDLE_TIMEOUT = 900.0  # Salesforce's former 15 minutes of inactivity
_names = count(1)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def emulator(clock: FakeClock) -> Iterator[EmulatorServer]:
    # Tokens outlive any clock move here; Bulk jobs complete at once.
    with EmulatorServer(orgs=[], clock=clock, token_ttl=30 * 24 * 3600, bulk_rate=0) as server:
        yield server


@dataclass
class Puller:
    """A fresh tenant on an org of its own, pulling Leads in-process through the product's session and client."""

    emulator: EmulatorServer
    redis: redis.Redis
    records: int
    name: str = field(default_factory=lambda: f"cursors{next(_names)}")
    sink: ListSink = field(default_factory=ListSink)
    charged: int = 0
    pages: int = 0

    def __post_init__(self) -> None:
        self.org: OrgInfo = self.emulator.control.add_org(self.name, records=self.records)
        self.token = self.emulator.control.issue_token(self.name)
        self.bucket = CreditBucket(self.redis)
        self.bucket.set_limit(self.name, 100_000, actor="test")

    def pull(self, fields: Sequence[str] = ("Name",), *, slice_over: Callable[[], bool] = lambda: False,
             bulk: BulkOptions = NO_BULK) -> None:
        sf = salesforce(self.name, self.bucket, self.org.instance_url, self.token, self.emulator.ca_bundle)
        try:
            result = run_pull(sf, client=self.redis, sink=self.sink, jobs=JobStore(self.redis), job_id="j1",
                              connection_id=CONNECTION, sobject="Lead", fields=fields, slice_over=slice_over,
                              bulk=bulk)
            self.pages += result.pages
        finally:
            self.charged += sf.session.charged - sf.session.refunded

    def other_client(self) -> Salesforce:
        """simple-salesforce as another client of the same user, on its own token."""
        session = session_for(self.emulator)
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, overrides the emulator's CA
        return Salesforce(instance_url=self.org.instance_url, session_id=self.emulator.control.issue_token(self.name),
                          session=session)

    def log(self) -> list[dict[str, Any]]:
        return self.emulator.control.request_log(self.name)

    def counted(self) -> int:
        return sum(1 for e in self.log() if e.get("counted"))

    def assert_each_record_once(self) -> None:
        ids = [str(r["Id"]) for r in self.sink.records]
        assert len(ids) == len(set(ids)) == self.records
        assert PullCheckpoint.load(self.redis, self.name, "Lead", CONNECTION).next_url is None


@pytest.fixture
def make_puller(emulator: EmulatorServer, redis_client: redis.Redis) -> Callable[[int], Puller]:
    return lambda records: Puller(emulator, redis_client, records)


def _expired(logs: list[Any]) -> int:
    return sum(1 for e in logs if e["event"] == "query_locator_expired")


def _refused_locators(puller: Puller) -> int:
    return sum(1 for e in puller.log() if e["status"] == 400 and "/query/" in e["path"])


def test_a_cursor_released_mid_read_is_queried_again_from_the_checkpoint(make_puller: Callable[[int], Puller]) -> None:
    puller = make_puller(4_500)  # pages of 2,000, 2,000 and 500
    puller.emulator.control.set_query_cursors(puller.name, limit=1)  # one cursor per user: the next releases ours
    other = puller.other_client()
    between_pages = count()

    def open_another_cursor() -> bool:
        if next(between_pages) == 0:  # after the first page, before the worker asks for the second
            assert other.query("SELECT Id FROM Lead")["done"] is False
        return False

    with capture_logs() as logs:
        puller.pull(slice_over=open_another_cursor)

    puller.assert_each_record_once()
    assert _expired(logs) == 1
    assert _refused_locators(puller) == 1  # the 400 was a counted request, and the worker paid for it
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted() - 1  # less the other's query


def test_a_cursor_that_expired_while_parked_is_queried_again(make_puller: Callable[[int], Puller],
                                                            clock: FakeClock) -> None:
    puller = make_puller(4_500)
    puller.emulator.control.set_query_cursors(puller.name, idle_timeout=IDLE_TIMEOUT)
    with pytest.raises(SliceEnded):
        puller.pull(slice_over=lambda: True)  # the first page, then the job stops with the next page stored
    assert len(puller.sink.records) == 2_000
    clock.advance(IDLE_TIMEOUT + 1)  # parked past Salesforce's idle expiry

    with capture_logs() as logs:
        puller.pull()

    puller.assert_each_record_once()
    assert _expired(logs) == 1
    assert _refused_locators(puller) == 1
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted()


def test_two_long_text_fields_mean_pages_of_200_and_each_is_paid(make_puller: Callable[[int], Puller]) -> None:
    puller = make_puller(1_050)
    puller.pull(LONG_TEXT)

    puller.assert_each_record_once()
    assert puller.pages == math.ceil(1_050 / 200) == 6
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted() == 6


def test_pages_shorter_than_asked_for_are_more_pages(make_puller: Callable[[int], Puller]) -> None:
    puller = make_puller(1_000)
    puller.emulator.control.set_page_cap(puller.name, 300)  # Salesforce may return fewer for big records

    puller.pull()

    puller.assert_each_record_once()
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted() == math.ceil(1_000 / 300)


def test_the_rest_estimate_counts_pages_of_200() -> None:
    assert rest_pull_cost(1_800) == 1
    assert rest_pull_cost(1_800, page_size=200) == 9
    assert rest_pull_cost(0, page_size=200) == 1
    assert rest_pull_cost(4_000, page_size=5_000) == 2  # never more than Salesforce's largest page


def test_a_long_text_pull_that_is_cheaper_by_bulk_goes_by_bulk(make_puller: Callable[[int], Puller]) -> None:
    """2,000 records: one REST page of plain fields, so REST; ten pages of 200 with two long text fields, where a
    Bulk job costs fewer credits."""
    remaining = 2_000 - 200
    assert rest_pull_cost(remaining, page_size=200) > bulk_pull_cost(remaining) > rest_pull_cost(remaining)
    puller = make_puller(2_000)
    slices = count()

    with capture_logs() as logs:  # the slice is bounded, should the read never end
        puller.pull(LONG_TEXT, slice_over=lambda: next(slices) > 20,
                    bulk=BulkOptions(mode="auto", sleep=lambda _: None))

    puller.assert_each_record_once()
    [chosen] = [e for e in logs if e["event"] == "pull_by_bulk"]
    assert (chosen["rest_credits"], chosen["bulk_credits"]) == (9, bulk_pull_cost(remaining))
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted()



def _refusal(status: int, content: object) -> SalesforceError:
    """The exception simple-salesforce raises for ``status`` (it passes the parsed JSON body, typed as bytes)."""
    kind = SalesforceResourceNotFound if status == 404 else SalesforceMalformedRequest
    return kind("https://org/services/data/v59.0/query/01g-2000", status, "query", cast(bytes, content))


@pytest.mark.parametrize(("error", "gone"), [
    (_refusal(400, [{"errorCode": "INVALID_QUERY_LOCATOR", "message": "invalid query locator"}]), True),
    (_refusal(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]), True),
    # Any other 400 is a real error of the request, not a forgotten cursor: querying again would hide it.
    (_refusal(400, [{"errorCode": "MALFORMED_QUERY", "message": "unexpected token"}]), False),
    (_refusal(400, b"not JSON"), False),
])
def test_only_a_forgotten_locator_is_queried_again(error: SalesforceError, gone: bool) -> None:
    assert _locator_gone(error) is gone
