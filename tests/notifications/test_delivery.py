"""Webhook and SMTP delivery to real local servers, and the delivery actor run by a real Dramatiq worker."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
import pytest
import redis
import trustme
from aiosmtpd.controller import Controller
from structlog.testing import capture_logs

from tests.notifications.conftest import HookServer, MailServer, metric
from worker import keys
from worker.broker import build_broker
from worker.devstack.redis_server import free_loopback_port
from worker.errors import InvalidDelivery
from worker.notifications import ChannelStore, EmailSettings, Notification, NotificationCenter
from worker.notifications.delivery import QUEUE, declare_delivery_actor, deliver, deliver_notification

PASSWORD = "smtp-pass-0123456789"


def notification(kind: str = "quota_exhausted") -> Notification:
    return Notification(id="0" * 32, at=datetime(2026, 11, 29, 12, tzinfo=UTC), kind=kind, tenant="acme",
                        window="w1", message="acme used all 100,000 credits; they return at 00:00 UTC",
                        details={"used": 100_000, "limit": 100_000})


class Sleeps(list[float]):
    """An injected sleep: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def hook_target(store: ChannelStore, url: str) -> str:
    return "webhook:" + store.add_webhook(url).id


def test_webhook_posts_the_notification_as_json(redis_client: redis.Redis, hook_server: HookServer) -> None:
    store = ChannelStore(redis_client)
    before = metric("quota_exhausted", "webhook", "delivered")
    assert deliver(redis_client, notification(), hook_target(store, hook_server.url + "/in?token=T0KEN"))
    [request] = hook_server.requests
    assert hook_server.paths == ["/in?token=T0KEN"]
    assert request["content_type"] == "application/json"
    assert request["body"] == notification().to_json()
    assert request["body"]["details"] == {"used": 100_000, "limit": 100_000}
    assert metric("quota_exhausted", "webhook", "delivered") - before == 1


def test_failing_webhook_is_retried_a_bounded_number_of_times(redis_client: redis.Redis,
                                                              hook_server: HookServer) -> None:
    hook_server.statuses = [503] * 10
    sleeps = Sleeps()
    before = metric("quota_exhausted", "webhook", "failed")
    target = hook_target(ChannelStore(redis_client), hook_server.url + "/in?token=T0KEN")
    with capture_logs() as logs:
        assert not deliver(redis_client, notification(), target, attempts=4, sleep=sleeps)
    assert len(hook_server.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff between the attempts, never after the last
    assert metric("quota_exhausted", "webhook", "failed") - before == 1
    failed = [e for e in logs if e["event"] == "notification_delivery_failed"]
    assert len(failed) == 1
    assert "HTTP 503" in failed[0]["error"]
    assert "T0KEN" not in json.dumps(logs, default=str)


def test_webhook_recovering_within_the_retries_is_delivered(redis_client: redis.Redis,
                                                            hook_server: HookServer) -> None:
    hook_server.statuses = [500, 429]
    sleeps = Sleeps()
    assert deliver(redis_client, notification(), hook_target(ChannelStore(redis_client), hook_server.url),
                   sleep=sleeps)
    assert [r["status"] for r in hook_server.requests] == [500, 429, 200]
    assert len(sleeps) == 2


def test_refused_webhook_is_not_retried(redis_client: redis.Redis, hook_server: HookServer) -> None:
    hook_server.statuses = [404]
    sleeps = Sleeps()
    assert not deliver(redis_client, notification(), hook_target(ChannelStore(redis_client), hook_server.url),
                       sleep=sleeps)
    assert len(hook_server.requests) == 1
    assert sleeps == []


def test_unreachable_webhook_fails_without_leaking_the_url(redis_client: redis.Redis) -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}/hook?token=T0KEN"
    sleeps = Sleeps()
    with capture_logs() as logs:
        assert not deliver(redis_client, notification("job_failed"),
                           hook_target(ChannelStore(redis_client), url), attempts=3, sleep=sleeps)
    assert len(sleeps) == 2
    assert "T0KEN" not in json.dumps(logs, default=str)


def test_removed_channel_is_skipped(redis_client: redis.Redis, hook_server: HookServer) -> None:
    store = ChannelStore(redis_client)
    target = hook_target(store, hook_server.url)
    store.remove_webhook(hook_server.url)
    assert not deliver(redis_client, notification(), target)
    assert not deliver(redis_client, notification(), "email")
    assert hook_server.requests == []


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "smtp-password"
    path.write_text(PASSWORD + "\n")
    return str(path)


def email_settings(mail_server: MailServer, **extra: object) -> EmailSettings:
    return EmailSettings(host=mail_server.host, port=mail_server.port, sender="crmsync@example.com",
                         recipients=("ops@example.com", "oncall@example.org"), **extra)  # type: ignore[arg-type]


def test_email_is_sent_over_smtp_with_login(redis_client: redis.Redis, mail_server: MailServer,
                                            password_file: str) -> None:
    ChannelStore(redis_client).set_email(email_settings(mail_server, username="crmsync",
                                                        password_ref=f"file:{password_file}"))
    before = metric("quota_exhausted", "email", "delivered")
    assert deliver(redis_client, notification(), "email")
    assert mail_server.logins == [("crmsync", PASSWORD)]
    [(envelope, message)] = mail_server.messages
    assert envelope.mail_from == "crmsync@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "oncall@example.org"]
    assert message["Subject"] == "[crmsync] quota_exhausted: acme"
    assert message["To"] == "ops@example.com, oncall@example.org"
    body = message.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert body.startswith("acme used all 100,000 credits; they return at 00:00 UTC\n")
    assert '"limit": 100000' in body
    assert metric("quota_exhausted", "email", "delivered") - before == 1


def test_email_login_refused_is_a_counted_failure(redis_client: redis.Redis, mail_server: MailServer,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_SMTP_PASSWORD", "wrong-password-SECRET")
    ChannelStore(redis_client).set_email(email_settings(mail_server, username="crmsync",
                                                        password_ref="env:CRMSYNC_TEST_SMTP_PASSWORD"))
    sleeps = Sleeps()
    before = metric("quota_exhausted", "email", "failed")
    with capture_logs() as logs:
        assert not deliver(redis_client, notification(), "email", sleep=sleeps)
    assert sleeps == []  # a refused login is final
    assert mail_server.messages == []
    assert metric("quota_exhausted", "email", "failed") - before == 1
    assert "SECRET" not in json.dumps(logs, default=str)
    assert "SECRET" not in json.dumps(redis_client.hgetall(keys.NOTIFY_CONFIG))


def test_email_server_temporary_refusal_is_retried(redis_client: redis.Redis, mail_server: MailServer) -> None:
    mail_server.reply = "451 try again later"
    ChannelStore(redis_client).set_email(email_settings(mail_server))
    sleeps = Sleeps()
    assert not deliver(redis_client, notification(), "email", attempts=3, sleep=sleeps)
    assert len(sleeps) == 2


def test_malformed_messages_are_refused() -> None:
    with pytest.raises(InvalidDelivery):
        deliver_notification(notification={"kind": "quota_exhausted"}, target="email")
    with pytest.raises(InvalidDelivery):
        deliver_notification(notification=notification().to_json(), target="sms")
    with pytest.raises(InvalidDelivery):
        deliver_notification(notification().to_json(), "email")


@pytest.fixture
def notify_worker(redis_client: redis.Redis) -> Iterator[dramatiq.Worker]:
    broker = build_broker()
    declare_delivery_actor(broker)
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=1, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


def test_end_to_end_through_the_broker(redis_client: redis.Redis, hook_server: HookServer,
                                       mail_server: MailServer, notify_worker: dramatiq.Worker) -> None:
    store = ChannelStore(redis_client)
    store.add_webhook(hook_server.url + "/a")
    store.add_webhook(hook_server.url + "/b?token=T0KEN")
    store.set_email(email_settings(mail_server))
    center = NotificationCenter(redis_client)
    for _ in range(5):  # five workers hitting the same empty bucket
        center.notify("quota_exhausted", "acme", "acme is out of credits", window="w1", used=5, limit=5)
    assert hook_server.wait_for(2)
    assert mail_server.wait_for(1)
    notify_worker.broker.join(QUEUE, timeout=15_000)
    assert sorted(hook_server.paths) == ["/a", "/b?token=T0KEN"]
    assert {r["body"]["message"] for r in hook_server.requests} == {"acme is out of credits"}
    [(_, message)] = mail_server.messages
    assert message["Subject"] == "[crmsync] quota_exhausted: acme"
    # Nothing in the broker's queues names a webhook URL (its token): messages carry the webhook's id.
    queued = json.dumps([redis_client.hgetall(k) for k in redis_client.keys("crmsync:broker*")
                         if redis_client.type(k) == "hash"])
    assert "T0KEN" not in queued


def test_email_over_starttls(redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             password_file: str) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # our client verifies with the default trust store
    mail = MailServer("127.0.0.1", free_loopback_port())
    # The server only takes AUTH and mail after STARTTLS: a client that skipped it would be refused.
    controller = Controller(mail, hostname=mail.host, port=mail.port, authenticator=mail.authenticate,
                            tls_context=server_context, require_starttls=True)
    controller.start()
    try:
        ChannelStore(redis_client).set_email(email_settings(mail, starttls=True, username="crmsync",
                                                            password_ref=f"file:{password_file}"))
        assert deliver(redis_client, notification(), "email", attempts=1)
    finally:
        controller.stop()
    assert mail.logins == [("crmsync", PASSWORD)]
    assert len(mail.messages) == 1
