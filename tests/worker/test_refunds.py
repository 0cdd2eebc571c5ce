"""When a credit goes back, and what happens to redirects, on real sockets.

A credit is refunded only when the request provably never left: the connect was refused or timed out, or the TLS
handshake failed or stalled, before a byte of the request was written. Anything after that first byte (TLS garbage
instead of an answer, a reset, no answer at all, the emulator dropping the connection) stays charged. Redirects
are never followed: the 3xx answer stays charged, the target gets nothing, and ``UnsafeRequest`` says where it
pointed. Each server here is a real listener on loopback (``tests/worker/listeners.py``) or the emulator with a
fault injected through its control API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from emulator import EmulatorServer
from quota import CreditBucket
from tests.conftest import FakeClock
from tests.worker import listeners
from tests.worker.listeners import Listener, TlsAuthority, closed_port, unanswered_port
from worker.errors import UnsafeRequest
from worker.salesforce.session import MeteredSession, RequestEvent

PATH = "/services/data/v59.0/limits/"
TOKEN = "00Dxx0000000001!secret-bearer-token"  # what must never reach another host
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Outcomes:
    """The session's observer: the outcome of each metered request, as the metrics see it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def after_request(self, event: RequestEvent) -> None:
        self.seen.append((event.outcome, event.charged))


@pytest.fixture(scope="module")
def authority() -> TlsAuthority:
    return TlsAuthority()


@pytest.fixture
def bucket(redis_client: redis.Redis, clock: FakeClock) -> CreditBucket:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="test")
    return bucket


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
def session(bucket: CreditBucket, authority: TlsAuthority, outcomes: Outcomes, tmp_path: Path) -> MeteredSession:
    # A short timeout for the cases that wait for an answer that never comes; it never decides the outcome.
    session = MeteredSession("acme", bucket, observers=(outcomes,), timeout=1.0)
    session.verify = authority.bundle(tmp_path / "ca.pem")
    return session


def _spent(bucket: CreditBucket) -> int:
    return bucket.status("acme").used


# -- refunded: nothing of the request was written ---------------------------------------------------------------

@pytest.mark.parametrize("behaviour", [listeners.close_at_once, listeners.stall_handshake],
                         ids=["closed-during-handshake", "handshake-never-answered"])
def test_a_handshake_that_fails_before_the_request_is_refunded(
    session: MeteredSession, bucket: CreditBucket, authority: TlsAuthority, outcomes: Outcomes,
    behaviour: listeners.Behaviour,
) -> None:
    with Listener(behaviour, tls=authority) as server, pytest.raises(requests.RequestException):
        session.get(server.base_url + PATH, headers=AUTH)
    assert server.accepted == 1
    assert server.received == b""
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 1, 0)
    assert outcomes.seen == [("not_sent", False)]


def test_a_certificate_the_worker_does_not_trust_is_refunded(
    session: MeteredSession, bucket: CreditBucket, outcomes: Outcomes,
) -> None:
    with Listener(listeners.answer(200), tls=TlsAuthority()) as impostor, \
            pytest.raises(requests.exceptions.SSLError):
        session.get(impostor.base_url + PATH, headers=AUTH)
    assert impostor.received == b""
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 1, 0)
    assert outcomes.seen == [("not_sent", False)]


def test_a_refused_connect_is_refunded(session: MeteredSession, bucket: CreditBucket) -> None:
    with pytest.raises(requests.ConnectionError):
        session.get(f"https://127.0.0.1:{closed_port()}{PATH}", headers=AUTH)
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 1, 0)


def test_a_connect_that_times_out_is_refunded(session: MeteredSession, bucket: CreditBucket) -> None:
    with unanswered_port() as port, pytest.raises(requests.exceptions.ConnectTimeout):
        session.get(f"https://127.0.0.1:{port}{PATH}", headers=AUTH)
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 1, 0)


# -- charged: the request was written, so Salesforce may have counted it -----------------------------------------

@pytest.mark.parametrize("case", [
    (listeners.garbage_after_request, requests.exceptions.SSLError),
    (listeners.reset_after_request, requests.ConnectionError),
    (listeners.silent_after_request, requests.exceptions.ReadTimeout),
], ids=["tls-garbage-instead-of-the-answer", "reset-mid-response", "read-timeout"])
def test_a_failure_after_the_request_was_written_stays_charged(
    session: MeteredSession, bucket: CreditBucket, authority: TlsAuthority, outcomes: Outcomes,
    case: tuple[listeners.Behaviour, type[Exception]],
) -> None:
    behaviour, error = case
    with Listener(behaviour, tls=authority) as server, pytest.raises(error):
        session.get(server.base_url + PATH, headers=AUTH)
    assert server.received.startswith(f"GET {PATH} HTTP/1.1".encode())  # it arrived
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 0, 1)
    assert outcomes.seen == [("connection_error", True)]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(orgs=["acme"]) as server:
        yield server


def test_a_connection_the_emulator_drops_stays_charged(emulator: EmulatorServer, bucket: CreditBucket) -> None:
    org = emulator.orgs["acme"]
    session = MeteredSession("acme", bucket)
    session.verify = emulator.ca_bundle
    emulator.control.clear_log("acme")
    emulator.control.inject_fault("acme", "drop", count=1)
    with pytest.raises(requests.ConnectionError):
        session.get(org.instance_url + PATH, headers={"Authorization": f"Bearer {org.access_token}"})
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 0, 1)
    assert [(e["fault"], e["counted"]) for e in emulator.control.request_log("acme")] == [("drop", True)]


# -- redirects ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["other-host", "same-host", "closed-port"])
def test_redirects_are_refused_charged_once_and_reach_nobody(
    session: MeteredSession, bucket: CreditBucket, authority: TlsAuthority, outcomes: Outcomes, target: str,
) -> None:
    with Listener(listeners.answer(200), tls=authority) as elsewhere:
        location = {"other-host": elsewhere.base_url + PATH, "same-host": "/services/data/v59.0/sobjects/",
                    "closed-port": f"https://127.0.0.1:{closed_port()}{PATH}"}[target]
        with Listener(listeners.answer(302, {"Location": location}), tls=authority) as redirecting:
            where = redirecting.base_url if target == "same-host" else location.removesuffix(PATH)
            with pytest.raises(UnsafeRequest, match=f"answered 302 redirecting to {where}; redirects are not"):
                session.get(redirecting.base_url + PATH, headers=AUTH)
    assert redirecting.accepted == 1  # the redirect itself was asked for, and not one hop after it
    assert elsewhere.accepted == 0
    assert TOKEN.encode() not in elsewhere.received
    # The redirect was Salesforce's answer to a request it counted: charged, never refunded, and no hop paid.
    assert (session.charged, session.refunded, _spent(bucket)) == (1, 0, 1)
    assert outcomes.seen == [("302", True)]


def test_a_300_without_location_is_an_answer_not_a_redirect(
    session: MeteredSession, authority: TlsAuthority,
) -> None:
    # An upsert by external id that matches several records answers 300 Multiple Choices: simple-salesforce's.
    with Listener(listeners.answer(300, body=b'["/services/data/v59.0/sobjects/Lead/00Q1"]'), tls=authority) as sf:
        assert session.get(sf.base_url + PATH, headers=AUTH).status_code == 300


# -- the session sends only to the instance it is bound to -------------------------------------------------------

def test_a_bound_session_sends_nothing_to_another_host(
    session: MeteredSession, bucket: CreditBucket, authority: TlsAuthority,
) -> None:
    with Listener(listeners.answer(200), tls=authority) as home, Listener(listeners.answer(200),
                                                                          tls=authority) as other:
        session.bind(home.base_url)
        assert session.get(home.base_url + PATH, headers=AUTH).status_code == 200
        for url in (other.base_url + PATH, f"https://127.0.0.1:{home.port}@127.0.0.1:{other.port}{PATH}",
                    f"http://127.0.0.1:{home.port}{PATH}", other.base_url + "/services/data/"):
            with pytest.raises(UnsafeRequest, match="not its Salesforce instance"):
                session.get(url, headers=AUTH)
    assert other.accepted == 0
    assert (session.charged, _spent(bucket)) == (1, 1)  # refused before any credit


@pytest.mark.parametrize("instance_url", ["http://na1.salesforce.com", "https://user@na1.salesforce.com",
                                          "https://na1.salesforce.com:99999", "na1.salesforce.com", ""])
def test_an_instance_url_that_is_not_https_host_is_refused(session: MeteredSession, instance_url: str) -> None:
    with pytest.raises(UnsafeRequest, match="names an instance URL that is not https://host"):
        session.bind(instance_url)
