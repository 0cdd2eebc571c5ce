"""``crmsync status`` at scale: a page of the tenants with the highest share of their limit used (``--limit``,
50 by default, the rest counted on stderr), ``--tenant`` for some, the same in ``--json``, few round trips for
many tenants, and the same rows from a Redis Cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from quota import CreditBucket
from tests.conftest import FakeClock
from worker import keys
from worker.cli import main
from worker.cli.status import DEFAULT_LIMIT, status_page, tenant_rows
from worker.devstack.liveview import LIVE_ROWS, BurnRates, Snapshot, plain_lines, render
from worker.devstack.redis_cluster import LocalRedisCluster
from worker.jobs.parking import PauseStore


def _fill(bucket: CreditBucket, count: int) -> dict[str, float]:
    """``count`` tenants, each using a different share of its limit; returns each one's share in percent."""
    shares = {}
    for i in range(count):
        tenant = f"t{i:03d}"
        limit = 100_000 + 1_000 * (i % 7)
        used = (i * 7_919) % 90_000 + 1  # shares in no particular order of the ids
        bucket.set_limit(tenant, limit, actor="test")
        bucket.take(tenant, used)
        shares[tenant] = 100.0 * used / limit
    return shares


def _shown(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


def test_a_page_of_the_highest_shares_and_how_many_more(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    shares = _fill(CreditBucket(env), 60)
    by_share = sorted(shares, key=lambda t: (-shares[t], t))

    assert main(["status"]) == 0
    out, err = capsys.readouterr()
    assert _shown(out) == by_share[:DEFAULT_LIMIT] == by_share[:50]
    assert "10 more of 60 tenants not shown" in err
    assert "--limit 0" in err

    assert main(["status", "--limit", "5", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)  # stdout stays one JSON document: the note is on stderr
    assert [r["tenant"] for r in rows] == by_share[:5]
    assert [r["percent_used"] for r in rows] == sorted((r["percent_used"] for r in rows), reverse=True)
    assert "55 more of 60 tenants" in err

    assert main(["status", "--limit", "0"]) == 0
    out, err = capsys.readouterr()
    assert _shown(out) == by_share
    assert err == ""  # nothing left out: nothing to say


def test_some_tenants_only(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    shares = _fill(CreditBucket(env), 8)
    PauseStore(env).pause("t003", "auth_failed", "token refused")

    assert main(["status", "--tenant", "t003", "--tenant", "t005", "--tenant", "t003", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = {r["tenant"]: r for r in json.loads(out)}
    assert list(rows) == sorted(["t003", "t005"], key=lambda t: -shares[t])  # once each, by share
    assert rows["t003"]["pause_reason"] == "auth_failed"
    assert err == ""

    # A tenant without config is shown as it is (nothing granted), not hidden.
    assert main(["status", "--tenant", "newcomer"]) == 0
    [line] = capsys.readouterr().out.splitlines()[1:]
    assert line.split()[:2] == ["newcomer", "UNSET"]


@pytest.mark.parametrize("argv", [["--tenant", "Not A Tenant"], ["--tenant", "../x"], ["--limit", "-1"],
                                  ["--limit", "many"]])
def test_bad_options_exit_2(env: redis.Redis, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    try:
        code: int | str | None = main(["status", *argv])
    except SystemExit as exited:  # argparse's own refusal (a --limit that is no number)
        code = exited.code
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert err.strip()


def test_garbage_first_and_no_limit_last(env: redis.Redis, clock: FakeClock) -> None:
    bucket = CreditBucket(env, clock=clock)
    _fill(bucket, 3)
    bucket.set_limit("broken", 100_000, actor="test")
    env.hset(keys.config("broken"), "reserve", "lots")  # invalid: grants nothing, as a bucket used up
    env.sadd(keys.TENANTS, "nolimit", "wrongtype")  # registered without a limit; and a key of the wrong type
    env.set(keys.config("wrongtype"), "not a hash")

    rows = tenant_rows(bucket)

    assert [r["tenant"] for r in rows[:2]] == ["broken", "wrongtype"]
    assert rows[0]["limit_state"] == "invalid"
    assert "reserve 'lots'" in rows[0]["config_error"]
    assert "WRONGTYPE" in rows[1]["unreadable"]
    assert [r["tenant"] for r in rows[2:5]] == sorted(
        ["t000", "t001", "t002"], key=lambda t: -next(r for r in rows if r["tenant"] == t)["percent_used"])
    assert rows[-1]["tenant"] == "nolimit"
    assert rows[-1]["limit_state"] == "unset"


class _CountingConnection(redis.Connection):
    """Counts the writes a client makes to Redis: one per command, or one per pipeline."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def test_two_thousand_tenants_in_a_few_round_trips(redis_client: redis.Redis, redis_url: str) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(2_000):
        pipe.sadd(keys.TENANTS, f"t{i:04d}")
        pipe.hset(keys.config(f"t{i:04d}"), "limit", str(100_000 + i))
    pipe.execute()
    CreditBucket(redis_client).take("t1234", 50_000)
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(redis_url,
                                                                       connection_class=_CountingConnection))
    opened = [client.connection_pool.get_connection() for _ in range(2)]  # two round trips in flight at a time
    for connection in opened:  # their handshakes are not the command's
        client.connection_pool.release(connection)
    _CountingConnection.sends = 0

    page = status_page(CreditBucket(client), limit=10, chunk=500)

    # The registry, the script load, 4 chunks of buckets (all, to sort them), one round trip for the page's rows.
    assert _CountingConnection.sends <= 2 + 4 + 1 + 1  # and one more if some window had to be asked again
    assert (page.total, page.hidden, len(page.rows)) == (2_000, 1_990, 10)
    assert page.rows[0]["tenant"] == "t1234"
    assert page.rows[0]["used"] == 50_000
    client.close()


def test_the_same_rows_from_a_redis_cluster(redis_cluster: LocalRedisCluster, cluster_client: redis.RedisCluster,
                                            redis_client: redis.Redis, clock: FakeClock, *,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    on_cluster = CreditBucket(cluster_client, clock=clock)
    _fill(on_cluster, 30)
    PauseStore(cluster_client, clock=clock).pause("t007", "org_limit", "org used up")  # type: ignore[arg-type]
    cluster_client.hset(keys.org_usage("t011"), mapping={"used": 7, "max": 15_000, "at": clock()})
    assert len({redis_cluster.master_of(keys.config(f"t{i:03d}")).port for i in range(30)}) == 3
    on_one = CreditBucket(redis_client, clock=clock)
    _fill(on_one, 30)
    PauseStore(redis_client, clock=clock).pause("t007", "org_limit", "org used up")
    redis_client.hset(keys.org_usage("t011"), mapping={"used": 7, "max": 15_000, "at": clock()})

    cluster_rows = tenant_rows(on_cluster, limit=12)
    assert cluster_rows == tenant_rows(on_one, limit=12)
    assert len(cluster_rows) == 12
    assert tenant_rows(on_cluster, tenants=["t007", "t011"]) == tenant_rows(on_one, tenants=["t007", "t011"])
    assert {r["tenant"]: r["paused"] for r in tenant_rows(on_cluster, tenants=["t007", "t011"])} == {
        "t007": True, "t011": False}

    # The command itself on a cluster URL (on the server's clock, as the command runs): the same page.
    monkeypatch.setenv("REDIS_URL", redis_cluster.url)
    assert main(["status", "--json", "--limit", "5"]) == 0
    out, err = capsys.readouterr()
    expected = tenant_rows(CreditBucket(redis_client), limit=5)
    # resets_at is "now" for a rolling tenant with nothing used: compare what does not move with the clock.
    assert [(r["tenant"], r["limit"], r["used"], r["paused"]) for r in json.loads(out)] == [
        (r["tenant"], r["limit"], r["used"], r["paused"]) for r in expected]
    assert "25 more of 30 tenants" in err


def test_the_live_view_shows_the_highest_shares_and_how_many_more(env: redis.Redis) -> None:
    shares = _fill(CreditBucket(env), LIVE_ROWS + 5)

    snapshot = Snapshot.read(env, BurnRates())

    assert [row["tenant"] for row in snapshot.tenants] == sorted(shares, key=lambda t: (-shares[t], t))[:LIVE_ROWS]
    assert snapshot.more == 5
    lines = plain_lines(snapshot)
    assert len(lines) == LIVE_ROWS + 1
    assert lines[-1] == "... 5 more tenants (crmsync status --limit 0)"
    render(snapshot)  # the rich table takes it too
