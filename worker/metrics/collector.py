"""Per-tenant gauges read from Redis at scrape time, so they hold for the whole cluster.

Whichever process serves them, they say what Redis says: every tenant in the quota registry
(``crmsync:tenants``) or the paused index (``crmsync:paused``, so a tenant without quota config whose jobs
parked still shows), with its bucket (its window mode and reserve included), pause and parked jobs, the org
usage Salesforce last reported and the org's Bulk API budgets as last read from ``/limits``
(``crmsync:{T}:bulk``; absent until a job first reads them).

The reads are pipelined, a chunk of tenants per round trip (six commands each), so 10,000 tenants take
about twenty round trips, not 60,000. The bucket is read through the metering script itself (a take of
zero credits writes nothing), so the window and when credits next come back are computed exactly as a take
computes them; its reply is decoded by ``quota.bucket.Reading``, the bucket's own reader.

Nothing in Redis can break a scrape: an invalid tenant id is skipped, a key of the wrong type or a value
that is no number drops only the series it would have fed, and each tenant whose read failed in part is
counted in ``crmsync_tenant_scrape_errors``. If Redis cannot be reached, no tenant series is reported and
``crmsync_tenant_scrape_success`` is 0. So it is too while the metering script is not in Redis's script cache
and this user may not load it (the read-only ``metrics`` ACL user may not; workers load it at start and on their
first take after a Redis restart or failover).

Beside the tenants, ``RedisPolicyCollector`` reports Redis's ``maxmemory-policy`` (``worker.eviction``): any
policy but ``noeviction`` may evict credit windows, and an alert fires on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import redis
import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from quota.bucket import Clock, meter_call
from quota.reading import Reading, WindowMode
from quota.replies import text
from quota.scripts import METER
from quota.validation import TENANT_PATTERN
from worker import keys
from worker.eviction import maxmemory_policy
from worker.jobs.parking import PauseReason
from worker.salesforce.bulk_limits import BUDGETS

__all__ = ["BULK_BUDGETS", "PAUSE_REASONS", "TENANT_GAUGES", "WINDOW_MODES", "RedisPolicyCollector", "TenantCollector"]

log = structlog.get_logger("crmsync.metrics")

#: Pause reasons reported as they are; any other stored reason is reported as ``other``.
PAUSE_REASONS = frozenset(get_args(PauseReason))

#: The ``budget`` label values.
BULK_BUDGETS = tuple(BUDGETS)

#: The ``window`` label values of ``crmsync_quota_window_info``.
WINDOW_MODES = tuple(get_args(WindowMode))

#: The only metric families that carry a ``tenant`` label: name -> help.
TENANT_GAUGES: dict[str, str] = {
    "crmsync_quota_limit": "Tenant's daily API credit limit (absent when the limit is unset or invalid)",
    "crmsync_quota_used": "API credits used in the tenant's current window",
    "crmsync_quota_remaining": "API credits left in the tenant's current window (0 without a valid limit)",
    "crmsync_quota_reset_timestamp_seconds": "When the tenant's next credits come back, epoch seconds: the daily "
                                             "reset, or in rolling mode when the oldest credits of the last 24 hours "
                                             "do (absent without a valid limit)",
    "crmsync_quota_reserve": "API credits of the tenant's remaining ones kept for essential jobs: normal jobs stop "
                             "when only these are left (absent without a valid limit)",
    "crmsync_quota_window_info": "The tenant's window mode as its window label (daily: all credits come back at the "
                                 "reset time; rolling: each 24 to 25 hours after it was taken), value 1 "
                                 "(absent without a valid limit)",
    "crmsync_tenant_paused": "1 while the tenant is paused, with the reason; one series per tenant, "
                             'value 0 and reason="" while it runs',
    "crmsync_parked_jobs": "Jobs parked while the tenant is paused, waiting to be re-queued (essential and normal)",
    "crmsync_org_api_usage": "API requests the tenant's Salesforce org reported used (Sforce-Limit-Info)",
    "crmsync_org_api_max": "API request limit the tenant's Salesforce org reported (Sforce-Limit-Info)",
    "crmsync_bulk_budget_remaining": "What is left of a Bulk API budget of the tenant's org (batches, query_jobs, "
                                     "query_storage_mb) as last read from /limits; absent until first read",
    "crmsync_bulk_budget_max": "A Bulk API budget's max per rolling 24 hours, as last read from /limits",
    "crmsync_bulk_budget_read_timestamp_seconds": "When the tenant's Bulk API budgets were last read from /limits, "
                                                  "epoch seconds",
}

#: The label each family carries besides ``tenant``, if any.
_SECOND_LABEL = {
    "crmsync_quota_window_info": "window",
    "crmsync_tenant_paused": "reason",
    "crmsync_bulk_budget_remaining": "budget",
    "crmsync_bulk_budget_max": "budget",
}

_COMMANDS_PER_TENANT = 6
_MAX_DIGITS = 18


def _count(value: Any) -> int | None:
    """A non-negative whole number from a Redis reply, or ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    raw = text(value)
    digits = raw.strip() if raw is not None else ""
    # ASCII only: str.isdigit() also accepts digits such as "²" that int() refuses; and short, as int()
    # refuses strings of thousands of digits.
    return int(digits) if len(digits) <= _MAX_DIGITS and digits.isascii() and digits.isdigit() else None


def _timestamp(value: Any) -> float | None:
    """Epoch seconds from a Redis reply (written as a float), or ``None`` for anything else."""
    try:
        seconds = float(text(value) or "nan")
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _raw_replies(client: redis.Redis) -> redis.Redis:
    """``client``, or a twin on the same server that leaves replies as bytes.

    A client that decodes replies raises mid-pipeline on a value that is not UTF-8, which would fail the
    whole scrape; as bytes, such a value is only one unreadable field.
    """
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return client
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


@dataclass
class _Families:
    """The families of one scrape, filled tenant by tenant."""

    gauges: dict[str, GaugeMetricFamily] = field(default_factory=lambda: {
        name: GaugeMetricFamily(name, doc, labels=["tenant", _SECOND_LABEL[name]] if name in _SECOND_LABEL
                                else ["tenant"])
        for name, doc in TENANT_GAUGES.items()
    })

    def add(self, name: str, tenant: str, value: float, *second: str) -> None:
        """Add a sample of ``name`` for ``tenant``; ``second`` is the value of its other label, if it has one."""
        self.gauges[name].add_metric([tenant, *second], value)


class TenantCollector:
    """A prometheus-client collector of per-tenant gauges, read from Redis on every ``collect``.

    ``clock`` pins "now" for the window computation (tests); by default the Redis server's TIME decides,
    as it does for every take. ``chunk`` tenants go in one pipelined round trip.
    """

    def __init__(self, client: redis.Redis, *, clock: Clock | None = None, chunk: int = 500) -> None:
        self.redis = _raw_replies(client)
        self.clock = clock
        self.chunk = max(1, chunk)
        self._may_load = True  # until Redis refuses SCRIPT LOAD to this user

    def describe(self) -> Iterable[Metric]:
        """The families this collector reports, without reading Redis (registration calls this)."""
        return [*_Families().gauges.values(), *self._meta(0, 0, 0, 0.0)]

    def collect(self) -> Iterable[Metric]:
        """Read every tenant from Redis and report its gauges; never raises for what Redis holds."""
        started = time.perf_counter()
        families = _Families()
        tenants: list[str] = []
        errors = 0
        success = 1
        try:
            tenants = self._tenants()
            self._ensure_script()
            for start in range(0, len(tenants), self.chunk):
                errors += self._read_chunk(tenants[start:start + self.chunk], families)
        except redis.RedisError as exc:
            # A partial cluster picture would read as tenants vanishing; report none and say the scrape failed.
            log.warning("tenant_metrics_unavailable", error=f"{type(exc).__name__}: {exc}")
            families, tenants, success = _Families(), [], 0
        yield from families.gauges.values()
        yield from self._meta(success, len(tenants), errors, time.perf_counter() - started)

    @staticmethod
    def _meta(success: int, tenants: int, errors: int, seconds: float) -> Iterator[Metric]:
        yield GaugeMetricFamily("crmsync_tenant_scrape_success",
                                "1 if the per-tenant gauges were read from Redis in this scrape, else 0", success)
        yield GaugeMetricFamily("crmsync_tenants", "Tenants reported by the per-tenant gauges", tenants)
        yield GaugeMetricFamily("crmsync_tenant_scrape_errors",
                                "Tenants whose state could not be read (in part) in this scrape, e.g. a key "
                                "of the wrong type", errors)
        yield GaugeMetricFamily("crmsync_tenant_scrape_duration_seconds",
                                "Time taken to read the per-tenant gauges from Redis", seconds)

    def _tenants(self) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.TENANTS)
        pipe.smembers(keys.PAUSED)
        replies = pipe.execute(raise_on_error=False)
        members: set[str] = set()
        for reply in replies:
            if isinstance(reply, set | list):  # a key of the wrong type answers with an error: skip it
                members.update(t for t in (text(m) for m in reply) if t and TENANT_PATTERN.fullmatch(t))
        return sorted(members)

    def _ensure_script(self) -> None:
        """Make sure the pipelined EVALSHAs find the metering script (a pipeline cannot load it on a miss): load
        it, or, as a user that may not (the ``metrics`` ACL user), check that a worker did. One round trip.

        Raises ``NoScriptError`` when it is missing and cannot be loaded.
        """
        execute: Any = self.redis.execute_command
        if self._may_load:
            try:
                execute("SCRIPT", "LOAD", METER.source)
                return
            except redis.exceptions.NoPermissionError:
                # Asked once per process, not per scrape: Redis's ACL LOG records every refusal.
                self._may_load = False
        if not execute("SCRIPT", "EXISTS", METER.sha)[0]:
            raise redis.exceptions.NoScriptError(
                "the metering script is not loaded (Redis restarted or failed over) and this user may not load "
                "it: a worker loads it at start and on its first take")

    def _read_chunk(self, tenants: Sequence[str], families: _Families) -> int:
        now = "" if self.clock is None else str(int(self.clock()))
        pipe = self.redis.pipeline(transaction=False)
        execute: Any = pipe.execute_command
        for tenant in tenants:
            execute(*METER.command(*meter_call(tenant, 0, now)))
            pipe.hgetall(keys.pause(tenant))
            pipe.zcard(keys.parked(tenant))
            pipe.zcard(keys.parked_essential(tenant))
            pipe.hmget(keys.org_usage(tenant), ["used", "max"])
            pipe.hgetall(keys.bulk_budget(tenant))
        replies = pipe.execute(raise_on_error=False)
        errors = 0
        for i, tenant in enumerate(tenants):
            meter, pause, parked, essential, org, bulk = replies[i * _COMMANDS_PER_TENANT:
                                                                 (i + 1) * _COMMANDS_PER_TENANT]
            failed = [self._quota(tenant, meter, families), self._pause(tenant, pause, families),
                      self._parked(tenant, (parked, essential), families), self._org(tenant, org, families),
                      self._bulk(tenant, bulk, families)]
            errors += int(any(failed))
        return errors

    @staticmethod
    def _quota(tenant: str, reply: Any, families: _Families) -> bool:
        """Add the bucket's gauges; return whether the read failed."""
        reading = Reading.parse(reply)
        if reading is None:
            return True  # e.g. WRONGTYPE inside the script: the config key is no hash
        families.add("crmsync_quota_used", tenant, reading.used)
        families.add("crmsync_quota_remaining", tenant, reading.remaining)
        if reading.valid:  # unset and invalid limits grant nothing and have no reset
            families.add("crmsync_quota_limit", tenant, reading.limit)
            families.add("crmsync_quota_reset_timestamp_seconds", tenant, reading.resets_at)
            families.add("crmsync_quota_reserve", tenant, reading.reserve)
            families.add("crmsync_quota_window_info", tenant, 1, reading.mode)
        return False

    @staticmethod
    def _pause(tenant: str, reply: Any, families: _Families) -> bool:
        if not isinstance(reply, dict):
            return True
        if not reply:
            families.add("crmsync_tenant_paused", tenant, 0, "")
            return False
        data = {text(k): text(v) for k, v in reply.items()}
        reason = data.get("reason") or ""
        families.add("crmsync_tenant_paused", tenant, 1, reason if reason in PAUSE_REASONS else "other")
        return False

    @staticmethod
    def _parked(tenant: str, replies: tuple[Any, Any], families: _Families) -> bool:
        """Add the parked jobs, essential and normal ones together."""
        normal, essential = (_count(reply) for reply in replies)
        if normal is None or essential is None:
            return True
        families.add("crmsync_parked_jobs", tenant, normal + essential)
        return False

    @staticmethod
    def _org(tenant: str, reply: Any, families: _Families) -> bool:
        if not isinstance(reply, list) or len(reply) != 2:
            return True
        if reply == [None, None]:
            return False  # Salesforce has not reported usage for this tenant yet
        used, maximum = _count(reply[0]), _count(reply[1])
        if used is None or maximum is None:
            return True
        families.add("crmsync_org_api_usage", tenant, used)
        families.add("crmsync_org_api_max", tenant, maximum)
        return False

    @staticmethod
    def _bulk(tenant: str, reply: Any, families: _Families) -> bool:
        """Add the Bulk budget gauges, each field on its own: a value that is no number drops only its series."""
        if not isinstance(reply, dict):
            return True
        data = {text(k): v for k, v in reply.items()}
        failed = False
        for budget in BULK_BUDGETS:
            for suffix, family in (("remaining", "crmsync_bulk_budget_remaining"), ("max", "crmsync_bulk_budget_max")):
                raw = data.get(f"{budget}_{suffix}")
                count = _count(raw)
                if count is not None:
                    families.add(family, tenant, count, budget)
                failed = failed or (raw is not None and count is None)
        if "at" in data:
            at = _timestamp(data["at"])
            if at is not None:
                families.add("crmsync_bulk_budget_read_timestamp_seconds", tenant, at)
            failed = failed or at is None
        return failed


class RedisPolicyCollector:
    """A prometheus-client collector of ``crmsync_redis_maxmemory_policy_info``, read with ``INFO`` on every
    ``collect``: value 1, the policy as its label; absent when Redis cannot be asked (the tenant gauges' own
    ``crmsync_tenant_scrape_success`` says so)."""

    NAME = "crmsync_redis_maxmemory_policy_info"
    HELP = ("Redis's maxmemory-policy as the policy label, value 1: any policy but noeviction may evict credit "
            "windows, and an evicted window is a full bucket")

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def describe(self) -> Iterable[Metric]:
        """The family this collector reports, without reading Redis (registration calls this)."""
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["policy"])]

    def collect(self) -> Iterable[Metric]:
        """Read the policy from Redis and report it; never raises."""
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["policy"])
        try:
            policy = maxmemory_policy(self.redis)
        except redis.ResponseError as exc:  # e.g. INFO refused to this user; an unreachable Redis is logged apart
            log.warning("redis_policy_unreadable", error=f"{type(exc).__name__}: {exc}")
            policy = None
        except redis.RedisError:
            policy = None
        if policy is not None:
            family.add_metric([policy], 1)
        yield family
