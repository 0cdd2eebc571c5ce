"""Webhook and SMTP delivery to real local servers, one attempt per run of the delivery message, on a real Redis
and an injected clock; and the delivery actor run by a real Dramatiq worker."""

from __future__ import annotations

import itertools
import json
import ssl
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import dramatiq
import pytest
import redis
import trustme
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.conftest import T0, FakeClock
from tests.notifications.conftest import HookServer, MailServer, metric
from worker import keys
from worker.broker import build_broker
from worker.devstack.redis_server import free_loopback_port
from worker.errors import InvalidDelivery
from worker.notifications import ChannelStore, EmailSettings, Notification, NotificationCenter
from worker.notifications.delivery import LEASE_S, QUEUE, declare_delivery_actor, deliver, parse_message
from worker.notifications.retry_policy import RetryPolicy

PASSWORD = "smtp-pass-0123456789"
# A chat webhook: the token is the URL's path (and, here, its query too).
TOKEN_PATH = "/services/T0000/B0000/XXXXpathTOKEN"


def notification(kind: str = "quota_exhausted", ident: str = "0" * 32) -> Notification:
    return Notification(id=ident, at=datetime.fromtimestamp(T0, UTC), kind=kind, tenant="acme",
                        window="w1", message="acme used all 100,000 credits; they return at 00:00 UTC",
                        details={"used": 100_000, "limit": 100_000})


def given_up(channel: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("crmsync_notification_deliveries_given_up_total",
                                      {"channel": channel, "reason": reason})
    return value or 0.0


def hook_target(store: ChannelStore, url: str) -> str:
    return "webhook:" + store.add_webhook(url).id


def record(client: redis.Redis, target: str, n: Notification | None = None) -> dict[str, str]:
    n = n or notification()
    return cast(dict[str, str], client.hgetall(keys.delivery(n.tenant, n.id, target)))


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_webhook_posts_the_notification_as_json(redis_client: redis.Redis, hook_server: HookServer,
                                                clock: FakeClock) -> None:
    target = hook_target(ChannelStore(redis_client), hook_server.url + TOKEN_PATH + "?token=T0KEN")
    before = metric("quota_exhausted", "webhook", "delivered")
    assert deliver(redis_client, notification(), target, clock=clock) is None
    [request] = hook_server.requests
    assert hook_server.paths == [TOKEN_PATH + "?token=T0KEN"]
    assert request["content_type"] == "application/json"
    assert request["body"] == notification().to_json()
    assert hook_server.headers[0]["Idempotency-Key"] == notification().id  # receivers may drop repeats by it
    assert metric("quota_exhausted", "webhook", "delivered") - before == 1
    assert record(redis_client, target) | {"at": ""} == {"state": "delivered", "attempts": "1", "reason": "",
                                                          "error": "", "at": ""}


def test_busy_webhook_is_retried_with_growing_delays_until_it_answers(redis_client: redis.Redis,
                                                                       hook_server: HookServer,
                                                                       clock: FakeClock) -> None:
    hook_server.statuses = [503, 500, 429, 502]
    target = hook_target(ChannelStore(redis_client), hook_server.url + TOKEN_PATH)
    before = metric("quota_exhausted", "webhook", "retried")
    waits = []
    with capture_logs() as logs:
        while (wait := deliver(redis_client, notification(), target, clock=clock)) is not None:
            waits.append(wait)
            # A copy of the message that runs before the next attempt is due sends nothing and waits the rest.
            clock.advance(wait / 2)
            assert deliver(redis_client, notification(), target, clock=clock) == wait / 2
            clock.advance(wait / 2)
    assert waits == [10, 20, 40, 80]
    assert [r["status"] for r in hook_server.requests] == [503, 500, 429, 502, 200]
    assert metric("quota_exhausted", "webhook", "retried") - before == 4
    retries = events(logs, "notification_delivery_retry")
    assert [(e["attempt"], e["retry_in"]) for e in retries] == [(1, 10), (2, 20), (3, 40), (4, 80)]
    assert retries[0]["error"] == f"webhook {target[8:]} (127.0.0.1:{hook_server.port}): HTTP 503"
    assert events(logs, "notification_delivered")[0]["attempt"] == 5
    assert "XXXXpathTOKEN" not in json.dumps(logs, default=str)
    assert record(redis_client, target)["state"] == "delivered"


def test_a_copy_of_a_delivered_message_sends_nothing(redis_client: redis.Redis, hook_server: HookServer,
                                                     clock: FakeClock) -> None:
    target = hook_target(ChannelStore(redis_client), hook_server.url)
    assert deliver(redis_client, notification(), target, clock=clock) is None
    for _ in range(3):  # redelivered by the broker after a worker died before acknowledging, say
        clock.advance(3600)
        assert deliver(redis_client, notification(), target, clock=clock) is None
    assert len(hook_server.requests) == 1


def test_refused_webhook_is_given_up_at_once(redis_client: redis.Redis, hook_server: HookServer,
                                             clock: FakeClock) -> None:
    hook_server.statuses = [404]
    target = hook_target(ChannelStore(redis_client), hook_server.url + TOKEN_PATH)
    before = given_up("webhook", "refused")
    with capture_logs() as logs:
        assert deliver(redis_client, notification(), target, clock=clock) is None
    [event] = events(logs, "notification_delivery_given_up")
    assert (event["reason"], event["attempt"], event["log_level"]) == ("refused", 1, "error")
    assert "HTTP 404" in str(event["error"])
    assert event["host"] == f"127.0.0.1:{hook_server.port}"
    assert given_up("webhook", "refused") - before == 1
    assert record(redis_client, target)["state"] == "gave_up"
    clock.advance(60)
    assert deliver(redis_client, notification(), target, clock=clock) is None
    assert len(hook_server.requests) == 1


def test_unreachable_webhook_is_retried_and_named_by_id_and_host(redis_client: redis.Redis,
                                                                 clock: FakeClock) -> None:
    port = free_loopback_port()
    target = hook_target(ChannelStore(redis_client), f"http://127.0.0.1:{port}{TOKEN_PATH}?token=T0KEN")
    with capture_logs() as logs:
        assert deliver(redis_client, notification("job_failed"), target, clock=clock) == 10
    [retry] = events(logs, "notification_delivery_retry")
    assert retry["error"] == f"webhook {target[8:]} (127.0.0.1:{port}): ConnectionError (could not connect)"
    assert retry["host"] == f"127.0.0.1:{port}"
    dumped = json.dumps(logs, default=str) + json.dumps(record(redis_client, target, notification("job_failed")))
    assert "T0KEN" not in dumped
    assert "XXXXpathTOKEN" not in dumped
    assert "/services" not in dumped


def test_a_post_that_may_have_arrived_is_never_sent_again(redis_client: redis.Redis, hook_server: HookServer,
                                                          clock: FakeClock) -> None:
    # The receiver reads the POST and drops the connection: it may have acted on it. Sending it again could
    # post it twice, so the delivery is given up, loudly.
    hook_server.drop = True
    target = hook_target(ChannelStore(redis_client), hook_server.url)
    before = given_up("webhook", "uncertain")
    with capture_logs() as logs:
        assert deliver(redis_client, notification(), target, clock=clock) is None
    [event] = events(logs, "notification_delivery_given_up")
    assert event["reason"] == "uncertain"
    assert "after the POST was sent" in str(event["error"])
    assert given_up("webhook", "uncertain") - before == 1
    hook_server.drop = False
    clock.advance(3600)
    assert deliver(redis_client, notification(), target, clock=clock) is None
    assert len(hook_server.requests) == 1


def test_retries_stop_at_the_bound_and_the_delivery_is_given_up(redis_client: redis.Redis,
                                                                 hook_server: HookServer,
                                                                 clock: FakeClock) -> None:
    target = hook_target(ChannelStore(redis_client), hook_server.url + TOKEN_PATH)
    hook_server.down()
    before = given_up("webhook", "expired")
    attempts = [clock()]
    with capture_logs() as logs:
        while (wait := deliver(redis_client, notification(), target, clock=clock)) is not None:
            clock.advance(wait)
            attempts.append(clock())
    offsets = [a - T0 for a in attempts]  # when each attempt started
    assert offsets[:10] == [0, 10, 30, 70, 150, 310, 630, 1270, 2550, 5110]  # doubling from 10 s
    assert {b - a for a, b in itertools.pairwise(offsets[9:])} == {3600}  # then hourly
    assert len(offsets) == 32
    assert offsets[-1] < 24 * 3600 < offsets[-1] + 3600
    [event] = events(logs, "notification_delivery_given_up")
    assert (event["reason"], event["attempt"]) == ("expired", 32)
    assert given_up("webhook", "expired") - before == 1
    assert record(redis_client, target)["state"] == "gave_up"
    hook_server.up()
    clock.advance(3600)
    assert deliver(redis_client, notification(), target, clock=clock) is None
    assert hook_server.requests == []


def test_the_retry_policy() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 12)] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert policy.delay(10_000) == 3600
    assert policy.deadline(datetime.fromtimestamp(T0, UTC)) == T0 + 86_400
    with pytest.raises(ValueError, match="positive"):
        RetryPolicy(first_delay_s=0)
    with pytest.raises(ValueError, match="no longer than"):
        RetryPolicy(first_delay_s=10, max_delay_s=5)


def test_removed_channel_is_skipped(redis_client: redis.Redis, hook_server: HookServer, clock: FakeClock) -> None:
    store = ChannelStore(redis_client)
    target = hook_target(store, hook_server.url)
    store.remove_webhook(hook_server.url)
    with capture_logs() as logs:
        assert deliver(redis_client, notification(), target, clock=clock) is None
        assert deliver(redis_client, notification(), "email", clock=clock) is None
    assert [e["event"] for e in logs] == ["notification_channel_gone"] * 2
    assert hook_server.requests == []


@pytest.fixture
def password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CRMSYNC_SECRET_DIRS", str(tmp_path))
    path = tmp_path / "smtp-password"
    path.write_text(PASSWORD + "\n")
    return str(path)


def email_settings(mail_server: MailServer, **extra: object) -> EmailSettings:
    return EmailSettings(host=mail_server.host, port=mail_server.port, sender="crmsync@example.com",
                         recipients=("ops@example.com", "oncall@example.org"), **extra)  # type: ignore[arg-type]


def test_email_is_sent_over_smtp_with_login(redis_client: redis.Redis, mail_server: MailServer,
                                            password_file: str, clock: FakeClock) -> None:
    ChannelStore(redis_client).set_email(email_settings(mail_server, username="crmsync",
                                                        password_ref=f"file:{password_file}"))
    before = metric("quota_exhausted", "email", "delivered")
    assert deliver(redis_client, notification(), "email", clock=clock) is None
    assert mail_server.logins == [("crmsync", PASSWORD)]
    [(envelope, message)] = mail_server.messages
    assert envelope.mail_from == "crmsync@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "oncall@example.org"]
    assert message["Subject"] == "[crmsync] quota_exhausted: acme"
    assert message["To"] == "ops@example.com, oncall@example.org"
    assert message["Message-ID"] == f"<{notification().id}@crmsync.invalid>"  # mail systems may drop repeats by it
    body = message.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert body.startswith("acme used all 100,000 credits; they return at 00:00 UTC\n")
    assert '"limit": 100000' in body
    assert metric("quota_exhausted", "email", "delivered") - before == 1


def test_email_login_refused_is_given_up(redis_client: redis.Redis, mail_server: MailServer,
                                         monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    monkeypatch.setenv("CRMSYNC_SECRET_TEST_SMTP_PASSWORD", "wrong-password-9f3k")
    ChannelStore(redis_client).set_email(email_settings(mail_server, username="crmsync",
                                                        password_ref="env:CRMSYNC_SECRET_TEST_SMTP_PASSWORD"))
    before = given_up("email", "refused")
    with capture_logs() as logs:
        assert deliver(redis_client, notification(), "email", clock=clock) is None  # a refused login is final
    assert mail_server.messages == []
    assert given_up("email", "refused") - before == 1
    assert "9f3k" not in json.dumps(logs, default=str)
    assert "9f3k" not in json.dumps(redis_client.hgetall(keys.NOTIFY_CONFIG))
    assert "9f3k" not in json.dumps(record(redis_client, "email"))


def test_email_server_temporary_refusal_is_retried(redis_client: redis.Redis, mail_server: MailServer,
                                                   clock: FakeClock) -> None:
    mail_server.reply = "451 try again later"
    ChannelStore(redis_client).set_email(email_settings(mail_server))
    assert deliver(redis_client, notification(), "email", clock=clock) == 10
    mail_server.reply = "250 OK"
    clock.advance(10)
    assert deliver(redis_client, notification(), "email", clock=clock) is None
    assert len(mail_server.messages) == 1


def test_email_whose_answer_never_came_is_never_sent_again(redis_client: redis.Redis, mail_server: MailServer,
                                                           clock: FakeClock) -> None:
    mail_server.drop = True  # takes the message in, then hangs up instead of answering it
    ChannelStore(redis_client).set_email(email_settings(mail_server))
    before = given_up("email", "uncertain")
    assert deliver(redis_client, notification(), "email", clock=clock) is None
    assert given_up("email", "uncertain") - before == 1
    mail_server.drop = False
    clock.advance(3600)
    assert deliver(redis_client, notification(), "email", clock=clock) is None
    assert len(mail_server.messages) == 1


def test_malformed_messages_are_refused() -> None:
    with pytest.raises(InvalidDelivery):
        parse_message((), {"notification": {"kind": "quota_exhausted"}, "target": "email"})
    with pytest.raises(InvalidDelivery):
        parse_message((), {"notification": notification().to_json(), "target": "sms"})
    with pytest.raises(InvalidDelivery):
        parse_message((notification().to_json(), "email"), {})
    assert parse_message((), {"notification": notification().to_json(), "target": "email"}) == \
        (notification(), "email")


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
                             password_file: str, clock: FakeClock) -> None:
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
        assert deliver(redis_client, notification(), "email", clock=clock) is None
    finally:
        controller.stop()
    assert mail.logins == [("crmsync", PASSWORD)]
    assert len(mail.messages) == 1


def test_the_actor_retries_only_its_own_waits_and_redis_faults() -> None:
    actor = declare_delivery_actor(build_broker())
    retry_when = actor.options["retry_when"]
    assert retry_when(40, dramatiq.Retry("next attempt", delay=3_600_000))  # however many attempts came before
    assert retry_when(0, redis.ConnectionError("Redis is down"))
    assert not retry_when(0, KeyError("a bug"))  # dead-lettered and logged by Dramatiq, not retried forever
    # An attempt is stopped before its claim's lease ends, so a live attempt is never taken for dead.
    assert actor.options["time_limit"] / 1000 < LEASE_S
    # Every given-up series is there from the start, so the first give-up is an increase an alert sees.
    for channel in ("webhook", "email"):
        for reason in ("expired", "refused", "uncertain"):
            assert REGISTRY.get_sample_value("crmsync_notification_deliveries_given_up_total",
                                             {"channel": channel, "reason": reason}) is not None


def test_a_webhook_whose_certificate_is_refused_is_retried(redis_client: redis.Redis, clock: FakeClock) -> None:
    # The certificate is checked in the TLS handshake, before any byte of the POST: nothing can have arrived.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)  # a CA nobody trusts
    hooks = HookServer(tls=server_context)
    hooks.up()
    try:
        target = hook_target(ChannelStore(redis_client), hooks.url + TOKEN_PATH)
        with capture_logs() as logs:
            assert deliver(redis_client, notification(), target, clock=clock) == 10
    finally:
        hooks.down()
    assert "SSLError (could not connect)" in str(events(logs, "notification_delivery_retry")[0]["error"])
    assert hooks.requests == []
