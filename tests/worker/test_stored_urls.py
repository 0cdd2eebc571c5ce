"""A checkpoint written by someone else cannot send the tenant's token anywhere: pulls against the emulator over
HTTPS, with a second HTTPS server on loopback as the 'evil' host.

The worker's CA bundle trusts the evil host's certificate too, so nothing but crmsync's own checks stands
between the bearer token and it. A pull stops after its first page (its time slice), the stored next page or Bulk
job is replaced by a hostile value, and the pull goes on: the evil host receives no connection at all, the
discarded value is logged with the reason, every record is delivered exactly once, and every credit matches a
request the emulator counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from emulator import EmulatorServer, OrgInfo
from quota import CreditBucket
from tests.worker import listeners
from tests.worker.listeners import Listener, TlsAuthority
from worker.errors import SliceEnded, UnsafeRequest
from worker.jobs.bulk import BulkOptions
from worker.jobs.pull import BulkRead, PullCheckpoint, run_pull
from worker.jobs.state import JobStore
from worker.salesforce.client import CachedTokens, TenantSalesforce
from worker.salesforce.oauth import AccessToken
from worker.salesforce.retry import RetryPolicy
from worker.salesforce.session import MeteredSession

RECORDS = 4_500  # REST pages of 2,000, 2,000 and 500
CONNECTION = "conn-1"
_names = count(1)
# What a hostile next_url may look like; {evil} is the evil host's 127.0.0.1:PORT.
HOSTILE_NEXT_URLS = [
    "@{evil}/services/data/v59.0/query/01gRO0000016PIAYA2-2000",
    ".evil.example/services/data/v59.0/query/01gRO0000016PIAYA2-2000",
    "//{evil}/services/data/v59.0/query/01gRO0000016PIAYA2-2000",
    "https://{evil}/services/data/v59.0/query/01gRO0000016PIAYA2-2000",
    "/services/data/v59.0/query/../../../../services/data/v59.0/sobjects/Lead",
    ":443@{evil}/services/data/v59.0/query/01gRO0000016PIAYA2-2000",
]
EMPTY_PAGE = json.dumps({"totalSize": 0, "done": True, "records": []}).encode()


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def deliver(self, tenant: str, sobject: str, records: Any) -> None:
        self.records.extend(records)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(orgs=[], bulk_rate=0) as server:  # Bulk jobs complete at once: no waiting on them
        yield server


@pytest.fixture(scope="module")
def authority() -> TlsAuthority:
    return TlsAuthority()


@pytest.fixture
def evil(authority: TlsAuthority) -> Iterator[Listener]:
    with Listener(listeners.answer(200, body=EMPTY_PAGE), tls=authority) as server:
        yield server


def salesforce(tenant: str, bucket: CreditBucket, instance_url: str, access_token: str,
               ca_bundle: str) -> TenantSalesforce:
    """The product's client and metered session for ``tenant``, on a token for ``instance_url``."""
    token = AccessToken(access_token=access_token, instance_url=instance_url, issued_at=time.time())

    class Source:
        def fetch(self) -> AccessToken:
            return token

        refresh = fetch

    session = MeteredSession(tenant, bucket)
    session.verify = ca_bundle
    return TenantSalesforce(tenant, session=session, tokens=CachedTokens(Source()),
                            policy=RetryPolicy(sleep=lambda _: None))


def pull(sf: TenantSalesforce, client: redis.Redis, sink: ListSink, *,
         slice_over: Callable[[], bool] = lambda: False, bulk: BulkOptions | None = None) -> None:
    run_pull(sf, client=client, sink=sink, jobs=JobStore(client), job_id="j1", connection_id=CONNECTION,
             sobject="Lead", fields=["Name"], slice_over=slice_over, **({"bulk": bulk} if bulk is not None else {}))


@pytest.fixture(scope="module")
def org(emulator: EmulatorServer) -> OrgInfo:
    return emulator.control.add_org("urls", records=RECORDS)  # seeded once: each test is a tenant of its own


@dataclass
class Puller:
    """A fresh tenant on the module's emulator org, pulling Leads in-process through the product's session and
    client (its own checkpoint and bucket; the org's request log cleared for it)."""

    emulator: EmulatorServer
    org: OrgInfo
    redis: redis.Redis
    ca_bundle: str
    name: str = field(default_factory=lambda: f"urls{next(_names)}")
    sink: ListSink = field(default_factory=ListSink)

    def __post_init__(self) -> None:
        self.bucket = CreditBucket(self.redis)
        self.bucket.set_limit(self.name, 100_000, actor="test")
        self.token = self.emulator.control.issue_token(self.org.name)
        self.emulator.control.clear_log(self.org.name)
        self.charged = 0

    def pull(self, *, slice_over: Callable[[], bool] = lambda: False, bulk: BulkOptions | None = None) -> None:
        sf = salesforce(self.name, self.bucket, self.org.instance_url, self.token, self.ca_bundle)
        try:
            pull(sf, self.redis, self.sink, slice_over=slice_over, bulk=bulk)
        finally:
            self.charged += sf.session.charged - sf.session.refunded

    def checkpoint(self) -> PullCheckpoint:
        return PullCheckpoint.load(self.redis, self.name, "Lead", CONNECTION)

    def tamper(self, **changes: Any) -> None:
        """Overwrite parts of the stored checkpoint, as anyone with write access to the key could."""
        stored = self.checkpoint()
        raw = {**stored.__dict__, "bulk": stored.bulk.__dict__ if stored.bulk else None}
        for name, value in changes.items():
            if name.startswith("bulk_"):
                raw["bulk"][name.removeprefix("bulk_")] = value
            else:
                raw[name] = value
        self.redis.hset(f"crmsync:{{{self.name}}}:pull:Lead", "state", json.dumps(raw))

    def delivered_ids(self) -> list[str]:
        return [str(r["Id"]) for r in self.sink.records]

    def counted(self) -> int:
        return sum(1 for e in self.emulator.control.request_log(self.org.name) if e.get("counted"))


@pytest.fixture
def puller(emulator: EmulatorServer, org: OrgInfo, redis_client: redis.Redis, authority: TlsAuthority,
           tmp_path: Path) -> Puller:
    return Puller(emulator, org, redis_client, authority.bundle(tmp_path / "ca.pem", emulator.ca_bundle))


def _discarded(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str]]:
    return [(e["part"], e["reason"]) for e in logs if e["event"] == "checkpoint_discarded"]


@pytest.mark.parametrize("hostile", HOSTILE_NEXT_URLS)
def test_a_hostile_next_url_is_discarded_and_the_token_stays_home(puller: Puller, evil: Listener,
                                                                   hostile: str) -> None:
    with pytest.raises(SliceEnded):
        puller.pull(slice_over=lambda: True)  # the first page, then the slice ends with the next page stored
    assert len(puller.sink.records) == 2_000
    stored = hostile.format(evil=f"127.0.0.1:{evil.port}")
    puller.tamper(next_url=stored)

    with capture_logs() as logs:
        puller.pull()

    assert evil.accepted == 0
    assert puller.token.encode() not in evil.received
    assert _discarded(logs) == [("next_url", f"not a Salesforce next-records path: {stored!r}")]
    ids = puller.delivered_ids()
    assert len(ids) == len(set(ids)) == RECORDS  # none skipped, none twice
    assert puller.checkpoint().next_url is None
    # The read went on by querying again from the highest SystemModstamp delivered, in place of the next page.
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted() == 3


def test_a_hostile_bulk_job_id_is_discarded_and_the_read_starts_again(puller: Puller) -> None:
    hostile = "750R0000000zlh9IAA/../../../sobjects/Lead"
    PullCheckpoint(connection_id=CONNECTION, bulk=BulkRead(job_id=hostile, since=None, skip={}, polls=1)).save(
        puller.redis, puller.name, "Lead")

    slices = count()
    with capture_logs() as logs:  # the slice is bounded, should the read never end
        puller.pull(slice_over=lambda: next(slices) > 20, bulk=BulkOptions(mode="always", sleep=lambda _: None))

    assert _discarded(logs) == [("bulk", f"not a Bulk API job id: {hostile!r}")]
    paths = [e["path"] for e in puller.emulator.control.request_log(puller.org.name)]
    assert not [p for p in paths if "sobjects" in p or "750R0000000zlh9IAA" in p]
    ids = puller.delivered_ids()
    assert len(ids) == len(set(ids)) == RECORDS
    assert puller.checkpoint().bulk is None
    assert puller.bucket.status(puller.name).used == puller.charged == puller.counted() == 3  # create, poll, page


def test_a_next_url_out_of_shape_from_salesforce_is_not_followed_and_its_page_not_delivered(
    redis_client: redis.Redis, authority: TlsAuthority, evil: Listener, tmp_path: Path,
) -> None:
    hostile = f"@127.0.0.1:{evil.port}/services/data/v59.0/query/01gRO0000016PIAYA2-2000"
    page = {"totalSize": 2_001, "done": False, "nextRecordsUrl": hostile,
            "records": [{"Id": "00Q000000000001AAA", "SystemModstamp": "2024-05-07T22:07:19.000+0000"}]}
    bucket = CreditBucket(redis_client)
    bucket.set_limit("acme", 100_000, actor="test")
    sink = ListSink()
    with Listener(listeners.answer(200, body=json.dumps(page).encode()), tls=authority) as instance:
        sf = salesforce("acme", bucket, instance.base_url, "token-1", authority.bundle(tmp_path / "ca.pem"))
        with pytest.raises(UnsafeRequest, match=r"not a Salesforce next-records path: '@127\.0\.0\.1"):
            pull(sf, redis_client, sink)
    assert evil.accepted == 0
    # Neither delivered nor checkpointed: the job fails (and is retried) where it stands.
    assert sink.records == []
    assert PullCheckpoint.load(redis_client, "acme", "Lead", CONNECTION) == PullCheckpoint(connection_id=CONNECTION)
    assert instance.accepted == 1
    assert sf.session.charged == 1
