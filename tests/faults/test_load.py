"""Load: 10,000 tenants with limits, 8 worker processes on jobs over 200 tenants, a 30-second soak with faults.

Afterwards, for every tenant: the emulator's request count equals the credits charged (plus the 401s of
expired tokens, which Salesforce does not attribute to the org: each is logged by the worker as
``token_refused`` and counted here), no bucket is overspent, and every job is done or parked with a reason.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from emulator import EmulatorServer
from quota import CreditBucket
from quota.scripts import CONFIGURE
from quota.validation import parse_limit
from quota.windows import DAILY_ENDS
from tests.conftest import wait_until
from tests.faults.conftest import Pool, Tenant, connect_tenant, worker_environment
from worker import keys
from worker.enqueue import enqueue_pull, enqueue_push
from worker.jobs.parking import PauseStore
from worker.jobs.state import TERMINAL

TENANTS = 10_000
ACTIVE = 200
OBJECTS = ("Lead", "Contact", "Account")
SOAK_S = 30.0
SHORT = 10  # tenants left with 3 credits: they run dry and park


@pytest.mark.slow
def test_soak_with_faults_over_many_tenants(
    emulator: EmulatorServer, redis_url: str, start_pool: Callable[..., Pool], tmp_path: Path, secrets_dir: Path,
) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=64)
    bucket = CreditBucket(client)
    started = time.monotonic()
    idle = [f"load-{i}-{random.randrange(10**9)}" for i in range(TENANTS - ACTIVE)]
    bucket.set_limit(idle[0], 100_000, actor="load")  # loads the configure script
    pipe = client.pipeline(transaction=False)
    for tenant_id in idle[1:]:
        # What set_limit does (the same Lua script: config, audit entry, tenant index), pipelined.
        pipe.sadd(keys.TENANTS, tenant_id)
        # A new tenant's window ends at the next UTC midnight: the counter the script must find declared.
        counter = keys.daily_counter(tenant_id, DAILY_ENDS.guess(tenant_id, time.time()))
        pipe.execute_command(*CONFIGURE.command(
            [keys.config(tenant_id), keys.audit(tenant_id), counter, keys.rolling_window(tenant_id), counter],
            ["load", "", 1000, 3600, "limit", str(parse_limit(100_000 + len(tenant_id)))]))
    pipe.execute()
    limits_s = time.monotonic() - started
    tenants: list[Tenant] = [connect_tenant(emulator, client, secrets_dir, records=30, prefix="load")
                             for _ in range(ACTIVE)]
    setup_s = time.monotonic() - started
    print(f"\n{TENANTS - ACTIVE:,} limits set (pipelined) in {limits_s:.1f}s; with {ACTIVE} tenants connected: "
          f"{setup_s:.1f}s")

    rng = random.Random(7)
    for index, tenant in enumerate(tenants):
        emulator.control.set_faults(tenant.org.name, error_rate=0.08, drop_rate=0.04, latency=0.01, seed=index)
    for tenant in tenants[:SHORT]:
        bucket.take(tenant.name, 100_000 - 3)

    env = worker_environment(redis_url, tmp_path / "data")
    workers = start_pool(env, processes=8, threads=1)
    jobs: list[tuple[Tenant, str]] = []
    for tenant in tenants:
        jobs += [(tenant, enqueue_pull(client, tenant.name, s)) for s in OBJECTS]

    soak_started = time.monotonic()
    expired: set[str] = set()
    pushes = 0
    while time.monotonic() - soak_started < SOAK_S:
        tenant = rng.choice(tenants)
        if len(expired) < 5 and rng.random() < 0.01:
            emulator.control.expire_tokens(tenant.org.name)
            expired.add(tenant.name)
        if rng.random() < 0.3:
            size = rng.randint(1, 250)
            rows = [{"External_Id__c": f"{tenant.name}-{pushes}-{i}", "Name": f"S{i}"} for i in range(size)]
            jobs.append((tenant, enqueue_push(client, tenant.name, "Campaign", rows, "External_Id__c")))
            pushes += 1
        else:
            jobs.append((tenant, enqueue_pull(client, tenant.name, rng.choice(OBJECTS))))
        time.sleep(0.05)  # the soak's pace: about 20 jobs a second
    print(f"soak: {len(jobs):,} jobs queued ({pushes} pushes) in {SOAK_S:.0f}s, tokens expired for {len(expired)}")

    def settled() -> bool:
        return all(t.job(j).state in TERMINAL | {"parked"} for t, j in jobs)

    def unsettled() -> object:
        return Counter((t.job(j).kind, t.job(j).state) for t, j in jobs)

    wait_until(settled, 120, "every job to settle", unsettled)
    print(f"all settled {time.monotonic() - soak_started:.1f}s after the soak began: {unsettled()}")
    assert workers.all_alive()

    refused = Counter(e.get("tenant") for e in workers.log_events()
                      if e.get("event") == "token_refused" and "grant" not in e)
    pauses = PauseStore(client)
    for tenant, job_id in jobs:
        record = tenant.job(job_id)
        if record.state == "parked":
            state = pauses.get(tenant.name)
            assert tenant in tenants[:SHORT], (tenant.name, record)
            assert state is not None
            assert state.reason == "quota_exhausted"
        else:
            assert record.state == "done", (tenant.name, record)
    for tenant in tenants:
        status = bucket.status(tenant.name)
        assert status.used <= status.limit
        base = 100_000 - 3 if tenant in tenants[:SHORT] else 0
        assert status.used - base == tenant.counted() + refused[tenant.name], tenant.name
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(bucket.status, idle))
    assert all(s.limit_state == "ok" and s.used == 0 for s in statuses)  # set, and nobody else was charged
