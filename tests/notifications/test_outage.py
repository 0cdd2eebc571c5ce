"""Deliveries outlive an endpoint outage: a real Dramatiq worker runs the delivery actor on the Redis broker while
the webhook and SMTP servers are down for hours (today's retries gave up after about 4 seconds), and each
notification arrives exactly once when they come back.

Time is the test's: the actor runs on a fake clock, and the broker holds each delayed message (a retry raised
with ``dramatiq.Retry``) until the test moves that clock past its delay and releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from tests.conftest import T0, FakeClock, wait_until
from tests.notifications.conftest import HookServer, MailServer
from worker import keys
from worker.broker import NAMESPACE
from worker.broker.redis import CrmsyncRedisBroker
from worker.notifications import ChannelStore, EmailSettings, NotificationCenter, recent
from worker.notifications.delivery import QUEUE, declare_delivery_actor


class HeldDelaysBroker(CrmsyncRedisBroker):
    """The Redis broker, except that a message sent with a delay waits here until ``release`` finds it due on
    the test's clock; then it goes to its queue in Redis like any other."""

    def __init__(self, clock: FakeClock, url: str) -> None:
        super().__init__(url=url, namespace=NAMESPACE)
        self.clock = clock
        self.held: list[tuple[float, dramatiq.Message[object]]] = []
        self.delays: list[float] = []
        self._lock = threading.Lock()

    def enqueue(self, message: dramatiq.Message[object], *, delay: int | None = None) -> dramatiq.Message[object]:
        if delay is None:
            return super().enqueue(message)
        with self._lock:
            self.held.append((self.clock() + delay / 1000, message))
            self.delays.append(delay / 1000)
        return message

    def next_due(self) -> float:
        with self._lock:
            return min(due for due, _ in self.held)

    def release(self) -> int:
        """Send every held message that is due now to its queue; how many."""
        with self._lock:
            due = [m for at, m in self.held if at <= self.clock()]
            self.held = [(at, m) for at, m in self.held if at > self.clock()]
        for message in due:
            super().enqueue(message)
        return len(due)


@pytest.fixture
def broker(redis_url: str, clock: FakeClock) -> Iterator[HeldDelaysBroker]:
    held = HeldDelaysBroker(clock, redis_url)
    declare_delivery_actor(held, clock=clock)
    worker = dramatiq.Worker(held, queues={QUEUE}, worker_threads=2, worker_timeout=50)
    worker.start()
    yield held
    worker.stop()


def test_endpoints_down_for_hours_get_each_notification_exactly_once(
        redis_client: redis.Redis, broker: HeldDelaysBroker, clock: FakeClock, hook_server: HookServer,
        mail_server: MailServer) -> None:
    store = ChannelStore(redis_client)
    store.add_webhook(hook_server.url + "/services/T0/B0/XXXXTOKEN")
    store.set_email(EmailSettings(host=mail_server.host, port=mail_server.port, sender="crmsync@example.com",
                                  recipients=("ops@example.com",)))
    hook_server.down()
    mail_server.down()
    actor = broker.get_actor("crmsync_deliver_notification")

    def send(payload: dict[str, object], target: str) -> None:
        actor.send(notification=payload, target=target)

    center = NotificationCenter(redis_client, clock=clock, send=send)
    tenants = ("acme", "globex", "initech")
    for tenant in tenants:
        center.notify("quota_exhausted", tenant, f"{tenant} is out of credits", window="w1", used=5, limit=5)
    deliveries = 2 * len(tenants)  # a webhook and an email each

    # Three hours down: every delivery's attempts fail (connection refused) and are retried, ever later.
    while True:
        wait_until(lambda: len(broker.held) == deliveries, 15, "every delivery waiting for its next attempt",
                   lambda: broker.held)
        if broker.next_due() > T0 + 3 * 3600:
            break
        clock.now = broker.next_due()
        assert broker.release() == deliveries
    assert broker.delays[::deliveries] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert hook_server.requests == []
    assert mail_server.messages == []

    hook_server.up()
    mail_server.up()
    clock.now = broker.next_due()
    assert broker.release() == deliveries
    assert hook_server.wait_for(len(tenants))
    assert mail_server.wait_for(len(tenants))
    broker.join(QUEUE, timeout=15_000)

    # A day later nothing else has come, and nothing waits.
    clock.advance(86_400)
    assert broker.held == []
    raised = {n.id: n.tenant for n in recent(redis_client, limit=10)}
    assert sorted(r["body"]["id"] for r in hook_server.requests) == sorted(raised)
    assert sorted(m["Message-ID"] for _, m in mail_server.messages) == sorted(f"<{i}@crmsync.invalid>" for i in raised)
    webhook = "webhook:" + store.load().webhooks[0].id
    for ident, tenant in raised.items():
        for target in (webhook, "email"):
            record = redis_client.hgetall(keys.delivery(tenant, ident, target))
            assert (record["state"], record["attempts"]) == ("delivered", "12")  # 11 failed in the outage


def test_copies_of_a_message_deliver_once(redis_client: redis.Redis, broker: HeldDelaysBroker, clock: FakeClock,
                                          hook_server: HookServer) -> None:
    # A worker that died after queueing a retry, or went silent past the heartbeat, leaves copies behind.
    store = ChannelStore(redis_client)
    hook = store.add_webhook(hook_server.url + "/hook")
    actor = broker.get_actor("crmsync_deliver_notification")
    sent: list[dict[str, object]] = []
    center = NotificationCenter(redis_client, clock=clock, send=lambda payload, target: sent.append(payload))
    center.notify("auth_failed", "acme", "acme: token refused", window="j1", job_id="j1")
    for _ in range(4):
        actor.send(notification=sent[0], target=f"webhook:{hook.id}")
    assert hook_server.wait_for(1)
    broker.join(QUEUE, timeout=15_000)
    # A copy that came while the first was sending was told to look again once its lease is over: it finds the
    # delivery done. The others found it done at once.
    clock.advance(3600)
    broker.release()
    broker.join(QUEUE, timeout=15_000)
    assert broker.held == []
    assert len(hook_server.requests) == 1
