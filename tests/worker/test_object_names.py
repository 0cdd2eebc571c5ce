"""One object, however spelled: Salesforce matches API names without regard to case, so ``Lead``, ``LEAD`` and
``lead`` get one active pull, one checkpoint and one lock, and jobs carry Salesforce's own spelling.

Commands run as a user runs them (the installed ``crmsync`` in a subprocess) on a real Redis, which the
``redis_client`` fixture flushes after each test, queued messages included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from worker import keys
from worker.enqueue import active_pull, enqueue_pull, enqueue_push
from worker.jobs.state import JobStore, adopt_legacy_checkpoint
from worker.salesforce.soql import STANDARD_OBJECTS, canonical_object, object_key, pull_query

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


def crmsync(redis_url: str, *args: str) -> str:
    done = subprocess.run([CRMSYNC, *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("name", ["Lead", "LEAD", "lead", "lEaD"])
def test_a_standard_object_in_any_case_is_salesforce_s_spelling(name: str) -> None:
    assert canonical_object(name) == "Lead"
    assert object_key(name) == "Lead"


def test_a_custom_object_keeps_its_spelling_and_is_keyed_in_lower_case() -> None:
    assert canonical_object("My_Thing__c") == "My_Thing__c"
    assert {object_key(n) for n in ("My_Thing__c", "MY_THING__c", "my_thing__c")} == {"my_thing__c"}
    assert all(object_key(n) == n for n in STANDARD_OBJECTS)  # checkpoints kept under these stay where they are


def test_sync_in_three_spellings_queues_one_pull_of_lead(redis_url: str, redis_client: redis.Redis) -> None:
    ids = {crmsync(redis_url, "sync", "acme", name) for name in ("Lead", "LEAD", "lead")}
    assert len(ids) == 1
    (job_id,) = ids
    record = JobStore(redis_client).get("acme", job_id)
    assert record is not None
    assert record.sobject == "Lead"
    assert redis_client.hgetall(keys.active_pulls("acme")) == {"Lead": job_id}
    queued = [json.loads(m) for m in redis_client.hvals("crmsync:broker:crmsync.msgs")]
    assert [m["kwargs"]["sobject"] for m in queued] == ["Lead"]


def test_a_custom_object_in_two_spellings_has_one_active_pull(redis_client: redis.Redis) -> None:
    first = enqueue_pull(redis_client, "acme", "My_Thing__c")
    assert enqueue_pull(redis_client, "acme", "MY_THING__c") == first
    assert active_pull(redis_client, "acme", "my_thing__c") == first
    assert redis_client.hgetall(keys.active_pulls("acme")) == {"my_thing__c": first}


def test_one_checkpoint_and_one_lock_key_per_object() -> None:
    assert len({keys.pull_checkpoint("acme", n) for n in ("Lead", "LEAD", "lead")}) == 1
    assert len({keys.lock("acme", n) for n in ("Account", "ACCOUNT", "account")}) == 1
    assert len({keys.lock("acme", n) for n in ("My_Thing__c", "my_thing__c")}) == 1
    # A checkpoint written before names were matched, under the canonical spelling, is the one now used.
    assert keys.pull_checkpoint("acme", "LEAD") == "crmsync:{acme}:pull:Lead"


def test_a_push_is_queued_under_salesforce_s_spelling(redis_client: redis.Redis) -> None:
    job_id = enqueue_push(redis_client, "acme", "CONTACT", [{"External_Id__c": "x"}], "External_Id__c")
    record = JobStore(redis_client).get("acme", job_id)
    assert record is not None
    assert record.sobject == "Contact"


def test_a_legacy_checkpoint_is_adopted_once_and_never_over_a_current_one(redis_client: redis.Redis) -> None:
    legacy = keys.legacy_pull_checkpoint("acme", "My_Thing__c")
    redis_client.hset(legacy, "state", '{"connection_id": "c1", "watermark": "old"}')
    adopt_legacy_checkpoint(redis_client, "acme", "My_Thing__c")
    assert redis_client.hget(keys.pull_checkpoint("acme", "My_Thing__c"), "state") == \
        '{"connection_id": "c1", "watermark": "old"}'
    assert not redis_client.exists(legacy)
    adopt_legacy_checkpoint(redis_client, "acme", "My_Thing__c")  # nothing left to move: no change
    # Another spelling's old checkpoint never replaces the object's own; it is dropped.
    other = keys.legacy_pull_checkpoint("acme", "MY_THING__C")
    redis_client.hset(other, "state", '{"connection_id": "c1", "watermark": "older"}')
    adopt_legacy_checkpoint(redis_client, "acme", "MY_THING__C")
    assert "old\"" in str(redis_client.hget(keys.pull_checkpoint("acme", "my_thing__c"), "state"))
    assert not redis_client.exists(other)


def test_a_standard_object_s_checkpoint_needs_no_move(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.pull_checkpoint("acme", "Lead"), "state", "{}")
    adopt_legacy_checkpoint(redis_client, "acme", "Lead")
    assert redis_client.hgetall(keys.pull_checkpoint("acme", "Lead")) == {"state": "{}"}


def test_an_ending_pull_queued_under_an_old_spelling_stops_being_active(redis_client: redis.Redis) -> None:
    jobs = JobStore(redis_client)
    jobs.create("acme", "j1", "pull", "LEAD")  # as an older version recorded it
    redis_client.hset(keys.active_pulls("acme"), "LEAD", "j1")
    jobs.set_state("acme", "j1", "done")
    assert redis_client.hgetall(keys.active_pulls("acme")) == {}


def test_a_field_selected_in_two_cases_is_selected_once() -> None:
    query = pull_query("Lead", ["id", "Name", "NAME", "Email", "systemmodstamp"], None)
    assert query == "SELECT Id, SystemModstamp, Name, Email FROM Lead ORDER BY SystemModstamp ASC"
