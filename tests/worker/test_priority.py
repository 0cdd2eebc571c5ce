"""Job priority: checked before anything is written, carried by the job message only when essential, and paid for
from the reserve only by essential sessions."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from quota import CreditBucket
from quota.errors import QuotaExhausted
from tests.conftest import FakeClock
from tests.scheduler.helpers import queued_messages
from worker.cli import main
from worker.enqueue import PULL_ACTOR, PUSH_ACTOR, active_pull, enqueue_pull, enqueue_push
from worker.errors import InvalidJob, InvalidPriority
from worker.jobs.actors import PullJob, PushJob
from worker.jobs.priority import check_priority, message_kwargs, priority_of
from worker.jobs.state import JobStore
from worker.salesforce.session import MeteredSession

BAD = ["urgent", "ESSENTIAL", "", " normal", None, 1, True, ["essential"]]


def priority_on_record(client: redis.Redis, job_id: str) -> str:
    record = JobStore(client).get("acme", job_id)
    assert record is not None
    return record.priority


@pytest.mark.parametrize("value", ["essential", "normal"])
def test_the_two_priorities_are_accepted(value: str) -> None:
    assert check_priority(value) == value


@pytest.mark.parametrize("value", BAD)
def test_any_other_priority_is_refused_by_name(value: object) -> None:
    with pytest.raises(InvalidPriority, match="use one of essential, normal"):
        check_priority(value)


def test_a_message_carries_its_priority_only_when_essential() -> None:
    assert message_kwargs("normal") == {}
    assert message_kwargs("essential") == {"priority": "essential"}
    assert priority_of({}) == "normal"  # messages queued before priorities existed
    assert priority_of({"priority": "essential"}) == "essential"


@pytest.mark.parametrize("value", BAD)
def test_a_bad_priority_queues_nothing(env: redis.Redis, value: Any) -> None:
    with pytest.raises(InvalidPriority):
        enqueue_pull(env, "acme", "Lead", priority=value)
    with pytest.raises(InvalidPriority):
        enqueue_push(env, "acme", "Lead", [{"Ext__c": "1"}], "Ext__c", priority=value)
    assert env.keys("*") == []


def test_enqueued_jobs_carry_their_priority(env: redis.Redis) -> None:
    normal = enqueue_pull(env, "acme", "Lead")
    essential = enqueue_push(env, "acme", "Contact", [{"Ext__c": "1"}], "Ext__c", priority="essential")
    kwargs = {m["kwargs"]["job_id"]: m["kwargs"] for m in queued_messages(env)}
    assert "priority" not in kwargs[normal]  # the same message as before priorities: any worker runs it
    assert kwargs[essential]["priority"] == "essential"
    assert [priority_on_record(env, j) for j in (normal, essential)] == ["normal", "essential"]


def test_an_essential_pull_is_not_served_by_a_normal_one(env: redis.Redis) -> None:
    normal = enqueue_pull(env, "acme", "Lead")
    assert enqueue_pull(env, "acme", "Lead") == normal
    # The normal pull may be parked while only the reserve is left: an essential one is queued of its own.
    essential = enqueue_pull(env, "acme", "Lead", priority="essential")
    assert essential != normal
    assert active_pull(env, "acme", "Lead", "essential") == essential
    assert enqueue_pull(env, "acme", "Lead", priority="essential") == essential
    assert enqueue_pull(env, "acme", "Lead") == essential  # an essential pull serves a normal request too


@pytest.mark.parametrize("value", ["urgent", 1, None, ""])
def test_a_message_with_a_malformed_priority_is_dead_lettered(value: object) -> None:
    pull = {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "seq": 1, "priority": value}
    with pytest.raises(InvalidJob, match="priority"):
        PullJob.parse((), pull)
    push = {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "external_id": "Ext__c", "priority": value}
    with pytest.raises(InvalidJob, match="priority"):
        PushJob.parse((), push)


def test_messages_are_parsed_with_their_priority() -> None:
    assert PullJob.parse((), {"tenant": "acme", "sobject": "Lead", "job_id": "j1"}).priority == "normal"
    job = PushJob.parse((), {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "external_id": "Ext__c",
                             "priority": "essential"})
    assert job.priority == "essential"


@pytest.mark.parametrize("argv", [
    ["sync", "acme", "Lead", "--priority", "urgent"],
    ["sync", "acme", "Lead", "--priority", ""],
    ["push", "acme", "Lead", "--file", "{file}", "--external-id", "Ext__c", "--priority", "high"],
])
def test_cli_refuses_a_bad_priority_with_exit_2_and_writes_nothing(
    env: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text('{"Ext__c": "1"}\n')
    assert main([a.replace("{file}", str(records)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crmsync: error: invalid priority")
    assert "essential, normal" in err
    assert env.keys("*") == []


def test_cli_queues_with_the_priority_given(env: redis.Redis, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text('{"Ext__c": "1"}\n')
    assert main(["sync", "acme", "Lead", "--priority", "essential"]) == 0
    assert main(["push", "acme", "Lead", "--file", str(records), "--external-id", "Ext__c",
                 "--priority", "essential"]) == 0
    assert main(["sync", "acme", "Contact"]) == 0
    pull, push, default = capsys.readouterr().out.split()
    assert [priority_on_record(env, j) for j in (pull, push, default)] == ["essential", "essential", "normal"]
    actors = {m["kwargs"]["job_id"]: m["actor_name"] for m in queued_messages(env)}
    assert actors == {pull: PULL_ACTOR, push: PUSH_ACTOR, default: PULL_ACTOR}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_only_an_essential_session_spends_the_reserve(redis_client: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(redis_client, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=500)
    assert bucket.take("acme", 99_500).granted  # only the reserve is left
    url = f"http://127.0.0.1:{_closed_port()}/services/data/v59.0/query/"
    normal = MeteredSession("acme", bucket)
    with pytest.raises(QuotaExhausted) as refused:
        normal.get(url, timeout=5)
    assert (refused.value.reserve_only, refused.value.reserve, refused.value.remaining) == (True, 500, 500)
    assert "kept for essential jobs" in str(refused.value)
    essential = MeteredSession("acme", bucket, essential=True)
    with pytest.raises(requests.ConnectionError):  # paid for from the reserve, then refunded: never sent
        essential.get(url, timeout=5)
    assert (essential.charged, essential.refunded, normal.charged) == (1, 1, 0)
    assert bucket.take("acme", 500, essential=True).granted
    with pytest.raises(QuotaExhausted) as empty:
        essential.get(url, timeout=5)
    assert not empty.value.reserve_only
