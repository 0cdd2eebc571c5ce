"""Pauses and parked jobs on a real Redis: a pause's scope, and essential jobs parked apart from normal ones."""

from __future__ import annotations

import pytest
import redis

from tests.conftest import T0, FakeClock
from worker import keys
from worker.jobs.parking import ParkedJob, PauseState, PauseStore


def job(seq: int, priority: str = "normal") -> ParkedJob:
    kwargs = {"tenant": "acme", "sobject": "Lead", "job_id": f"j{seq}", "seq": seq}
    return ParkedJob("crmsync_pull", kwargs | ({"priority": priority} if priority == "essential" else {}))


@pytest.fixture
def pauses(redis_client: redis.Redis, clock: FakeClock) -> PauseStore:
    return PauseStore(redis_client, clock=clock)


def test_a_pause_holds_every_job_unless_only_normal_ones_must_wait() -> None:
    everything = PauseState("acme", "quota_exhausted", T0, "", "all")
    normal_only = PauseState("acme", "quota_exhausted", T0, "", "normal")
    assert everything.holds("normal")
    assert everything.holds("essential")
    assert normal_only.holds("normal")
    assert not normal_only.holds("essential")


def test_the_first_park_pauses_with_its_reason_and_scope(pauses: PauseStore) -> None:
    assert pauses.park("acme", job(1), "quota_exhausted", "only the reserve is left", "normal")
    assert pauses.get("acme") == PauseState("acme", "quota_exhausted", T0, "only the reserve is left", "normal")
    assert pauses.paused_tenants() == ["acme"]


def test_a_pause_of_normal_jobs_widens_when_an_essential_job_is_stopped(pauses: PauseStore,
                                                                         clock: FakeClock) -> None:
    pauses.park("acme", job(1), "quota_exhausted", "only the reserve is left", "normal")
    clock.advance(60)
    pauses.park("acme", job(2), "quota_exhausted", "tenant paused", "normal")  # never widens
    assert pauses.get("acme") == PauseState("acme", "quota_exhausted", T0, "only the reserve is left", "normal")
    assert not pauses.park("acme", job(3, "essential"), "org_limit", "org at 95%", "all")
    # Essential jobs now wait too, for the reason that stopped one; the pause keeps its start.
    assert pauses.get("acme") == PauseState("acme", "org_limit", T0, "org at 95%", "all")
    pauses.park("acme", job(4, "essential"), "auth_failed", "401", "all")
    assert pauses.get("acme") == PauseState("acme", "org_limit", T0, "org at 95%", "all")  # the first reason


def test_a_pause_from_before_scopes_holds_every_job(redis_client: redis.Redis, pauses: PauseStore) -> None:
    redis_client.hset(keys.pause("acme"), mapping={"reason": "quota_exhausted", "since": "1.5", "detail": "d"})
    state = pauses.get("acme")
    assert state is not None
    assert state.scope == "all"
    pauses.park("acme", job(1), "quota_exhausted", "only the reserve is left", "normal")
    assert pauses.get("acme") == state


def test_narrowing_lets_essential_jobs_go_on_only_for_the_reason_read(pauses: PauseStore) -> None:
    pauses.park("acme", job(1, "essential"), "quota_exhausted", "no credits left", "all")
    assert not pauses.narrow("acme", "org_limit")
    assert pauses.narrow("acme", "quota_exhausted")
    state = pauses.get("acme")
    assert state is not None
    assert (state.reason, state.scope) == ("quota_exhausted", "normal")
    assert not pauses.narrow("globex", "quota_exhausted")  # not paused: nothing is written
    assert pauses.get("globex") is None


def test_essential_jobs_are_parked_apart_and_all_come_back_in_order(redis_client: redis.Redis,
                                                                    pauses: PauseStore) -> None:
    for seq, priority in ((5, "normal"), (2, "essential"), (9, "essential"), (3, "normal")):
        pauses.park("acme", job(seq, priority), "quota_exhausted", "no credits left", "all")
    assert redis_client.zcard(keys.parked("acme")) == 2
    assert redis_client.zcard(keys.parked_essential("acme")) == 2
    assert (pauses.parked_count("acme"), pauses.essential_count("acme")) == (4, 2)
    first = pauses.first_parked("acme", essential_only=True)
    assert first is not None
    assert first[1].kwargs["job_id"] == "j2"
    order = []
    while (head := pauses.first_parked("acme")) is not None:
        order.append(head[1].kwargs["job_id"])
        pauses.remove_parked("acme", head[0])
    assert order == ["j2", "j3", "j5", "j9"]
    assert pauses.first_parked("acme", essential_only=True) is None


def test_parking_the_same_job_twice_keeps_it_once(pauses: PauseStore) -> None:
    pauses.park("acme", job(1, "essential"), "quota_exhausted", "no credits left", "all")
    pauses.park("acme", job(1, "essential"), "quota_exhausted", "tenant paused", "normal")
    assert pauses.parked_count("acme") == 1


def test_an_idle_tenant_leaves_the_index_only_once_both_sets_are_empty(pauses: PauseStore) -> None:
    pauses.park("acme", job(1, "essential"), "quota_exhausted", "no credits left", "all")
    pauses.unpause("acme")
    pauses.forget_if_idle("acme")
    assert pauses.paused_tenants() == ["acme"]  # its essential job is still to be sent back
    head = pauses.first_parked("acme")
    assert head is not None
    pauses.remove_parked("acme", head[0])
    pauses.forget_if_idle("acme")
    assert pauses.paused_tenants() == []
