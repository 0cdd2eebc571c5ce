"""Fixtures for the emulator tests: a movable clock, running emulators and simple-salesforce clients."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import requests
import simple_salesforce.bulk2
from simple_salesforce.api import Salesforce
from simple_salesforce.bulk2 import SFBulk2Handler

from emulator import EmulatorServer

# 2024-05-07T22:07:19Z: every test starts at the same instant, so timestamps are predictable.
START = 1_715_119_639.0


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True, scope="session")
def _no_ca_override() -> Iterator[None]:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify (requests issue 3829);
    # the emulator is trusted through session.verify, as the worker does it.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        patch.delenv("CURL_CA_BUNDLE", raising=False)
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[EmulatorServer]:
    """A fresh emulator with orgs acme, globex and a sandbox, 20 records per object, limit 1,000."""
    with EmulatorServer(orgs=["acme", "globex", "acme-sandbox:sandbox"], records=20, daily_limit=1000,
                        token_ttl=3600, clock=clock) as server:
        yield server


def error_content(error: Exception) -> Any:
    """The parsed JSON body simple-salesforce attached to one of its exceptions (typed loosely upstream)."""
    return getattr(error, "content", None)


def session_for(emulator: EmulatorServer) -> requests.Session:
    """A requests session that trusts the emulator's CA."""
    session = requests.Session()
    session.verify = emulator.ca_bundle
    return session


def salesforce(emulator: EmulatorServer, org: str = "acme", version: str = "59.0") -> Salesforce:
    """simple-salesforce, unchanged, on the org's ready token."""
    info = emulator.orgs[org]
    return Salesforce(instance_url=info.instance_url, session_id=info.access_token,
                      session=session_for(emulator), version=version)


@pytest.fixture
def sf(emu: EmulatorServer) -> Salesforce:
    return salesforce(emu)


@pytest.fixture
def api(emu: EmulatorServer) -> Callable[..., requests.Response]:
    """Raw authenticated calls to acme: ``api("GET", "limits/")``."""
    session = session_for(emu)
    session.headers["Authorization"] = f"Bearer {emu.orgs['acme'].access_token}"

    def call(method: str, path: str, **kwargs: object) -> requests.Response:
        url = path if path.startswith("https://") else f"{emu.base_url}/services/data/v59.0/{path}"
        return session.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]

    return call


@pytest.fixture
def instant_bulk(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """acme's bulk jobs finish at once, and simple-salesforce's bulk2 polls without sleeping on the wall clock."""
    emu.control.set_bulk_rate("acme", 0)
    monkeypatch.setattr(simple_salesforce.bulk2, "sleep", lambda seconds: None)


def bulk2(sf: Salesforce) -> SFBulk2Handler:
    """``sf.bulk2``, typed as what it is (simple-salesforce's ``__getattr__`` types it loosely)."""
    return cast(SFBulk2Handler, sf.bulk2)


def csv_records(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    """A Bulk API CSV answer as dicts by column."""
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def query_job(api: Callable[..., requests.Response], soql: str, **options: str) -> str:
    """Create a Bulk API 2.0 query job (raw HTTPS) and return its id."""
    response = api("POST", "jobs/query", json={"operation": "query", "query": soql, **options})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def ingest_job(api: Callable[..., requests.Response], sobject: str, operation: str, data: str,
               **options: str) -> str:
    """Create an ingest job, upload ``data`` as text/csv and close it; returns the job id."""
    created = api("POST", "jobs/ingest", json={"object": sobject, "operation": operation, **options})
    assert created.status_code == 200, created.text
    job_id = str(created.json()["id"])
    uploaded = api("PUT", f"jobs/ingest/{job_id}/batches", data=data.encode(),
                   headers={"Content-Type": "text/csv"})
    assert uploaded.status_code == 201, uploaded.text
    closed = api("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
    assert closed.status_code == 200, closed.text
    return job_id
