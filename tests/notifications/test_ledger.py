"""The delivery ledger on a real Redis: each crash window of ``worker.notifications.ledger``'s docstring, played
with copies of one delivery message run by hand on an injected clock, ends with the notification sent at most
once, and a delivery that may or may not have arrived given up loudly instead of sent again."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import cast

import pytest
import redis
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from quota.connection import connect
from tests.conftest import T0, FakeClock
from tests.notifications.conftest import HookServer
from worker import keys
from worker.notifications import ChannelStore, Notification
from worker.notifications.delivery import LEASE_S, deliver
from worker.notifications.ledger import KEEP_AFTER_S, Claim, DeliveryLedger, decide

DEADLINE = T0 + 86_400.0
N = Notification(id="1" * 32, at=datetime.fromtimestamp(T0, UTC), kind="auth_failed", tenant="acme", window="j1",
                 message="acme: token refused", details={})


def given_up(reason: str) -> float:
    value = REGISTRY.get_sample_value("crmsync_notification_deliveries_given_up_total",
                                      {"channel": "webhook", "reason": reason})
    return value or 0.0


@pytest.fixture
def target(redis_client: redis.Redis, hook_server: HookServer) -> str:
    return "webhook:" + ChannelStore(redis_client).add_webhook(hook_server.url + "/services/T/B/TOKEN").id


def ledger(client: redis.Redis, target: str) -> DeliveryLedger:
    return DeliveryLedger(client, N, target, deadline=DEADLINE, lease_s=LEASE_S)


@pytest.mark.parametrize(("record", "now", "claim"), [
    ({}, T0, Claim("send", attempt=1)),
    ({}, DEADLINE + 1, Claim("gave_up", reason="expired")),
    ({"state": "waiting", "attempts": "3", "next_at": str(T0 + 70)}, T0 + 60, Claim("wait", wait_s=10)),
    ({"state": "waiting", "attempts": "3", "next_at": str(T0 + 70)}, T0 + 70, Claim("send", attempt=4)),
    ({"state": "waiting", "attempts": "3", "next_at": str(DEADLINE)}, DEADLINE + 1, Claim("gave_up", reason="expired")),
    ({"state": "sending", "attempts": "2", "until": str(T0 + 300)}, T0 + 100, Claim("wait", wait_s=200)),
    ({"state": "sending", "attempts": "2", "until": str(T0 + 300)}, T0 + 300, Claim("gave_up", reason="uncertain")),
    ({"state": "delivered", "attempts": "1"}, T0, Claim("finished", state="delivered")),
    ({"state": "gave_up", "attempts": "1"}, T0, Claim("finished", state="gave_up")),
    # Hand-written garbage: whether anything was sent is unknown, so nothing is.
    ({"state": "sending", "attempts": "2"}, T0, Claim("gave_up", reason="uncertain")),
    ({"state": "waiting", "attempts": "x", "next_at": "0"}, T0, Claim("gave_up", reason="uncertain")),
    ({"state": "lost"}, T0, Claim("gave_up", reason="uncertain")),
])
def test_what_a_copy_decides(record: dict[str, str], now: float, claim: Claim) -> None:
    assert decide(record, now, DEADLINE) == claim


def test_copies_racing_for_an_attempt_let_exactly_one_send(redis_client: redis.Redis, target: str,
                                                          redis_url: str) -> None:
    claims: list[Claim] = []
    start = threading.Barrier(8)

    def copy() -> None:
        client = cast(redis.Redis, connect(redis_url))  # one node, or the cluster under tests/cluster
        start.wait()
        claims.append(ledger(client, target).begin(T0))
        client.close()

    threads = [threading.Thread(target=copy) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(c.action for c in claims) == ["send"] + ["wait"] * 7
    assert {c.wait_s for c in claims if c.action == "wait"} == {LEASE_S}


def test_a_worker_dead_mid_attempt_leaves_the_delivery_given_up_never_resent(
        redis_client: redis.Redis, hook_server: HookServer, target: str, clock: FakeClock) -> None:
    # The worker claimed its attempt and died (killed, or its POST in flight): nobody knows if it arrived.
    assert ledger(redis_client, target).begin(clock()) == Claim("send", attempt=1)
    clock.advance(60)
    # The broker hands its message to another worker: it must wait out the lease (the first may be alive).
    assert deliver(redis_client, N, target, clock=clock) == LEASE_S - 60
    clock.advance(LEASE_S - 60)
    before = given_up("uncertain")
    with capture_logs() as logs:
        assert deliver(redis_client, N, target, clock=clock) is None
        assert deliver(redis_client, N, target, clock=clock) is None  # a second copy: counted once
    assert [(e["event"], e["reason"]) for e in logs if e["log_level"] == "error"] == \
        [("notification_delivery_given_up", "uncertain")]
    assert given_up("uncertain") - before == 1
    assert hook_server.requests == []


def test_a_retry_lost_before_it_was_queued_is_made_by_the_redelivered_message(
        redis_client: redis.Redis, hook_server: HookServer, target: str, clock: FakeClock) -> None:
    hook_server.statuses = [503]
    assert deliver(redis_client, N, target, clock=clock) == 10
    # The worker died before Dramatiq queued the retry: the same message comes back at once, and waits.
    assert deliver(redis_client, N, target, clock=clock) == 10
    clock.advance(10)
    assert deliver(redis_client, N, target, clock=clock) is None
    # And the retry Dramatiq did queue, a copy, finds it delivered.
    assert deliver(redis_client, N, target, clock=clock) is None
    assert [r["status"] for r in hook_server.requests] == [503, 200]


def test_an_attempt_that_lost_its_claim_writes_nothing(redis_client: redis.Redis, target: str) -> None:
    first = ledger(redis_client, target)
    assert first.begin(T0) == Claim("send", attempt=1)
    # Frozen past its lease: another copy gave the delivery up meanwhile.
    assert first.begin(T0 + LEASE_S) == Claim("gave_up", reason="uncertain")
    assert not first.end(1, T0 + LEASE_S + 1, "waiting", next_at=T0 + LEASE_S + 11)
    assert redis_client.hget(keys.delivery(N.tenant, N.id, target), "state") == "gave_up"


def test_the_record_outlives_every_copy_and_then_expires(redis_client: redis.Redis, target: str) -> None:
    records = ledger(redis_client, target)
    records.begin(T0)
    key = keys.delivery(N.tenant, N.id, target)
    assert redis_client.ttl(key) == pytest.approx(86_400 + LEASE_S + KEEP_AFTER_S, abs=2)
    assert records.end(1, T0 + 5, "delivered")
    assert redis_client.ttl(key) == pytest.approx(86_400 - 5 + LEASE_S + KEEP_AFTER_S, abs=2)
    assert redis_client.hgetall(key) == {"state": "delivered", "attempts": "1", "reason": "", "error": "",
                                         "at": str(T0 + 5)}
