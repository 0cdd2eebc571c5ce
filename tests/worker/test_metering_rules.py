"""Which requests cost a credit, how Sforce-Limit-Info is read, the retry policy and the org usage cache (when a
credit goes back is proven on real sockets in test_refunds.py)."""

from __future__ import annotations

import threading

import pytest
import redis
import requests

from tests.conftest import wait_until
from worker import keys
from worker.salesforce.retry import RetryPolicy, is_concurrency_limit, is_daily_org_limit, is_transient
from worker.salesforce.session import OrgUsage, OrgUsageCache, is_metered, parse_limit_info
from worker.settings import WorkerSettings


@pytest.mark.parametrize(("url", "metered"), [
    ("https://x.my.salesforce.com/services/data/v59.0/query/?q=SELECT+Id+FROM+Lead", True),
    ("https://x.my.salesforce.com/services/data/v59.0/query/01gXX-2000", True),
    ("https://x.my.salesforce.com/services/data/v59.0/composite/sobjects", True),
    ("https://x.my.salesforce.com/services/data/v59.0/limits/", True),
    ("https://x.my.salesforce.com/services/data/v59.0", True),
    ("https://x.my.salesforce.com/services/data/", False),
    ("https://x.my.salesforce.com/services/data", False),
    ("https://login.salesforce.com/services/oauth2/token", False),
    ("https://x.my.salesforce.com/services/data/v59.0x/evil", False),
])
def test_which_requests_are_metered(url: str, metered: bool) -> None:
    assert is_metered(url) is metered


@pytest.mark.parametrize(("header", "expected"), [
    ("api-usage=25/5000", (25, 5000)),
    ("api-usage=25/5000; per-app-api-usage=17/250(appName=x)", (25, 5000)),
    ("per-app-api-usage=17/250(appName=x); api-usage=110018/100000", (110018, 100000)),
    ("api-usage=110018/100000; api-bursts=1/750", (110018, 100000)),
    ("", None),
    (None, None),
    ("per-app-api-usage=17/250(appName=x)", None),
])
def test_limit_info_is_parsed_unanchored(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_limit_info(header) == expected


class _Refused(Exception):
    def __init__(self, status: int, content: object) -> None:
        super().__init__("refused")
        self.status = status
        self.content = content


def test_limit_errors_are_told_apart() -> None:
    daily = _Refused(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    concurrent = _Refused(403, [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                                 "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    other = _Refused(403, [{"message": "no", "errorCode": "INSUFFICIENT_ACCESS"}])
    assert is_daily_org_limit(daily)
    assert not is_daily_org_limit(concurrent)
    assert is_concurrency_limit(concurrent)
    assert not is_daily_org_limit(other)
    assert not is_concurrency_limit(other)


def test_transient_errors() -> None:
    assert is_transient(requests.ConnectionError())
    assert is_transient(requests.Timeout())
    assert not is_transient(ValueError())


def test_retry_policy_is_bounded_and_sleeps_through_the_injected_sleep() -> None:
    sleeps: list[float] = []
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        raise requests.ConnectionError("down")

    policy = RetryPolicy(attempts=4, initial_wait=1.0, max_wait=3.0, jitter=0.0, sleep=sleeps.append)
    with pytest.raises(requests.ConnectionError):
        policy.retrying()(flaky)
    assert calls == 4
    assert sleeps == [1.0, 2.0, 3.0]


def test_retry_policy_does_not_retry_permanent_errors() -> None:
    sleeps: list[float] = []
    def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        RetryPolicy(sleep=sleeps.append).retrying()(bug)
    assert sleeps == []


def test_retry_policy_from_settings() -> None:
    settings = WorkerSettings.from_env({"CRMSYNC_RETRY_ATTEMPTS": "7", "CRMSYNC_RETRY_INITIAL_WAIT": "0.25"})
    policy = RetryPolicy.from_settings(settings)
    assert (policy.attempts, policy.initial_wait, policy.max_wait) == (7, 0.25, 20.0)
    for bad in ("lots", "2.5", "0", "nan"):
        with pytest.raises(ValueError, match="CRMSYNC_RETRY_ATTEMPTS"):
            WorkerSettings.from_env({"CRMSYNC_RETRY_ATTEMPTS": bad})


@pytest.mark.parametrize(("variable", "field", "default"), [
    ("CRMSYNC_REQUEST_TIMEOUT", "request_timeout", 130.0),
    ("CRMSYNC_JOB_SLICE_SECONDS", "job_slice_seconds", 300.0),
])
def test_seconds_settings_from_env(monkeypatch: pytest.MonkeyPatch, variable: str, field: str,
                                   default: float) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert getattr(WorkerSettings.from_env(), field) == default
    monkeypatch.setenv(variable, "45")
    assert getattr(WorkerSettings.from_env(), field) == 45.0
    for bad in ("0", "-5", "soon", "inf", "nan"):
        monkeypatch.setenv(variable, bad)
        with pytest.raises(ValueError, match=f"{variable}="):
            WorkerSettings.from_env()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_org_usage_stays_off_the_request_path(redis_client: redis.Redis) -> None:
    clock = _Clock()
    cache = OrgUsageCache(redis_client, max_age=1.0, urgent_share=0.9, clock=clock, background=False)
    assert cache.get("acme") is None  # the first question in this process reads Redis (nothing yet)
    redis_client.hset(keys.org_usage("acme"), mapping={"used": 10, "max": 100, "at": 1})  # another process
    clock.now += 1.5
    assert cache.get("acme") is None  # a view under 2 x max_age old is answered from memory
    cache.refresh()  # the background step re-reads the tenants asked about lately
    assert cache.get("acme") == OrgUsage(10, 100, 1.0)

    cache.record("acme", 20, 100, 2.0)  # a response updates the view, not Redis
    assert cache.get("acme") == OrgUsage(20, 100, 2.0)
    assert OrgUsage.read(redis_client, "acme") == OrgUsage(10, 100, 1.0)
    cache.record("acme", 95, 100, 3.0)  # past the pause share: written at once for the other processes
    assert OrgUsage.read(redis_client, "acme") == OrgUsage(95, 100, 3.0)
    cache.record("acme", 50, 100, 4.0)
    cache.record("globex", 7, 100, 4.0)
    cache.record("globex", 8, 100, 4.5)
    cache.refresh()  # every tenant's latest, in one round trip
    assert OrgUsage.read(redis_client, "acme") == OrgUsage(50, 100, 4.0)
    assert OrgUsage.read(redis_client, "globex") == OrgUsage(8, 100, 4.5)

    clock.now += 61  # nobody asked about acme for a minute: its view is stale, and read again when asked
    redis_client.hset(keys.org_usage("acme"), mapping={"used": 60, "max": 100, "at": 5})
    cache.refresh()
    assert cache.get("acme") == OrgUsage(60, 100, 5.0)


def test_org_usage_without_max_age_goes_to_redis_every_time(redis_client: redis.Redis) -> None:
    cache = OrgUsageCache(redis_client, max_age=0.0)
    cache.record("acme", 1, 100, 1.0)
    assert OrgUsage.read(redis_client, "acme") == OrgUsage(1, 100, 1.0)
    redis_client.hset(keys.org_usage("acme"), mapping={"used": 2, "max": 100, "at": 2})
    assert cache.get("acme") == OrgUsage(2, 100, 2.0)
    assert not [t for t in threading.enumerate() if t.name == "org-usage"]


def test_the_background_thread_shares_usage_both_ways(redis_client: redis.Redis) -> None:
    cache = OrgUsageCache(redis_client, max_age=0.05)
    try:
        assert cache.get("acme") is None
        cache.record("acme", 2, 100, 2.0)  # written by the thread within max_age
        wait_until(lambda: OrgUsage.read(redis_client, "acme") == OrgUsage(2, 100, 2.0), 30,
                   "the usage to be written")
        redis_client.hset(keys.org_usage("acme"), mapping={"used": 7, "max": 100, "at": 7})  # another process
        wait_until(lambda: cache.get("acme") == OrgUsage(7, 100, 7.0), 30, "the other process's usage to be read")
        cache.record("acme", 8, 100, 8.0)
    finally:
        cache.close()  # a worker shutting down writes what is left
    assert OrgUsage.read(redis_client, "acme") == OrgUsage(8, 100, 8.0)


def test_org_usage_survives_a_failed_write(redis_client: redis.Redis) -> None:
    clock = _Clock()
    cache = OrgUsageCache(redis_client, max_age=1.0, clock=clock, background=False)
    cache.record("acme", 1, 100, 1.0)
    cache.record("acme", 2, 100, 2.0)
    redis_client.set(keys.org_usage("acme"), "not a hash")  # HSET fails with WRONGTYPE
    with pytest.raises(redis.ResponseError):
        cache.refresh()
    redis_client.delete(keys.org_usage("acme"))
    cache.refresh()  # still pending: written now
    assert OrgUsage.read(redis_client, "acme") == OrgUsage(2, 100, 2.0)
