"""``crmsync status`` and the live view: each tenant's window mode and reserve, a pause of normal jobs only, and
tenants whose config or counters are garbage listed with the reason, next to the others."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import redis

from quota import CreditBucket
from tests.conftest import T0, FakeClock
from worker import keys
from worker.cli import main
from worker.cli.status import tenant_rows
from worker.devstack.liveview import Snapshot, plain_lines, render
from worker.jobs.parking import PauseStore


def test_window_mode_reserve_and_a_pause_of_normal_jobs(env: redis.Redis, clock: FakeClock,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bucket = CreditBucket(env, clock=clock)
    bucket.set_limit("acme", 100_000, actor="t", reserve=5_000)
    assert bucket.take("acme", 96_000, essential=True).granted
    bucket.set_limit("globex", 150_000, actor="t", window="rolling")
    pauses = PauseStore(env, clock=clock)
    pauses.pause("acme", "quota_exhausted", "only the reserve is left")
    pauses.narrow("acme", "quota_exhausted")

    rows = {row["tenant"]: row for row in tenant_rows(bucket)}
    acme = rows["acme"]
    assert (acme["window"], acme["reserve"], acme["remaining"], acme["available"]) == ("daily", 5_000, 4_000, 0)
    assert (acme["pause_reason"], acme["pause_scope"]) == ("quota_exhausted", "normal")
    assert (rows["globex"]["window"], rows["globex"]["reserve"], rows["globex"]["pause_scope"]) == ("rolling", 0, None)

    assert main(["status"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["TENANT", "LIMIT", "WINDOW", "RESERVE"]
    assert lines[0].split()[:4] == ["acme", "100,000", "daily", "5,000"]
    assert "paused: quota_exhausted (normal jobs)" in lines[0]
    assert lines[1].split()[:4] == ["globex", "150,000", "rolling", "0"]

    view = Snapshot(T0, [dict(row, burn_per_minute=0.0, jobs=Counter()) for row in rows.values()], [])
    plain = plain_lines(view)
    assert "(daily, reserve 5,000)" in plain[0]
    assert "PAUSED quota_exhausted (normal jobs)" in plain[0]
    assert "(rolling, reserve 0)" in plain[1]
    render(view)  # the rich table takes the same rows


def test_garbage_tenants_are_listed_with_the_reason_and_hide_no_one(env: redis.Redis,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bucket = CreditBucket(env)  # on the server's clock, as the command's own bucket
    for tenant in ("good", "counter", "rolling", "reserve", "window", "resetfrom", "wrongtype"):
        bucket.set_limit(tenant, 100_000, actor="t", window="rolling" if tenant == "rolling" else None)
        bucket.take(tenant, 5)
    window_end = int(bucket.status("counter").resets_at.timestamp())
    env.set(f"{keys.window_prefix('counter')}{window_end}", "-50")  # by hand: what was spent is unknown
    env.hset(keys.rolling_window("rolling"), "garbage", "x")
    env.hset(keys.config("reserve"), "reserve", "lots")
    env.hset(keys.config("window"), "window", "weekly")
    env.hset(keys.config("resetfrom"), "reset_from", "9" * 20)
    env.delete(keys.config("wrongtype"))
    env.set(keys.config("wrongtype"), "not a hash")

    rows = {row["tenant"]: row for row in tenant_rows(bucket)}
    assert rows["good"]["remaining"] == 99_995
    for tenant in ("counter", "rolling", "reserve", "window", "resetfrom"):
        assert rows[tenant]["limit_state"] == "invalid", tenant
        assert rows[tenant]["config_error"], tenant
        assert rows[tenant]["available"] == 0, tenant
    assert "WRONGTYPE" in rows["wrongtype"]["unreadable"]

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert "invalid: reserve 'lots' is not a whole number below the limit" in out
    assert "invalid: invalid window 'weekly'" in out
    assert out.count("\n") == 1 + 7 + 5  # the header, every tenant, and a reason under each invalid one
    assert main(["status", "--json"]) == 0
    assert {row["tenant"] for row in json.loads(capsys.readouterr().out)} == set(rows)
