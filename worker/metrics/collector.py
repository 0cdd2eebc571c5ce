"""Per-tenant gauges read from Redis at scrape time, so they hold for the whole cluster.

Whichever process serves them, they say what Redis says: every tenant in the quota registry
(``crmsync:tenants``) or the paused index (``crmsync:paused``, so a tenant without quota config whose jobs
parked still shows), with its bucket (its window mode and reserve included), pause and parked jobs, the org
usage Salesforce last reported and the org's Bulk API budgets as last read from ``/limits``
(``crmsync:{T}:bulk``; absent until a job first reads them). With a ``Shard``, only the tenants of that shard.

The reads are pipelined (``worker.metrics.reads``), a chunk of tenants per round trip: three commands per
running tenant (the bucket, org usage, Bulk budgets), six per tenant in the paused index (its pause and both
parked sets too). The bucket is read through the metering script itself (a take of zero credits writes
nothing), so the window and when credits next come back are computed exactly as a take computes them; its
reply is decoded by ``quota.reading.Reading``, the bucket's own reader. The samples are written straight as
exposition lines (``TenantScrape.render``), not as prometheus-client sample objects: at 100,000 tenants
(about 1.2 million samples) those cost more than reading Redis.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

import redis
import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from quota.bucket import Clock
from quota.reading import Reading, WindowMode
from worker import keys
from worker.jobs.parking import PauseReason
from worker.metrics.reads import (
    Client,
    Shard,
    defer,
    ensure_meter,
    learn,
    meter_command,
    pipelined,
    raw_replies,
    redis_policies,
    registry,
    settle,
)
from worker.salesforce.bulk_limits import BUDGETS

__all__ = ["BULK_BUDGETS", "META_GAUGES", "PAUSE_REASONS", "TENANT_GAUGES", "WINDOW_MODES", "RedisPolicyCollector",
           "TenantCollector", "TenantScrape"]

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

#: The scrape's own gauges (no labels): name -> help. Each metrics instance reports its own (its shard's).
META_GAUGES: dict[str, str] = {
    "crmsync_tenant_scrape_success": "1 if the per-tenant gauges were read from Redis in this scrape, else 0",
    "crmsync_tenants": "Tenants reported by the per-tenant gauges (of this instance's shard, when sharded)",
    "crmsync_tenant_scrape_errors": "Tenants whose state could not be read (in part) in this scrape, e.g. a key "
                                    "of the wrong type",
    "crmsync_tenant_scrape_duration_seconds": "Time taken to read the per-tenant gauges from Redis",
}

#: The label each family carries besides ``tenant``, if any.
_SECOND_LABEL = {
    "crmsync_quota_window_info": "window",
    "crmsync_tenant_paused": "reason",
    "crmsync_bulk_budget_remaining": "budget",
    "crmsync_bulk_budget_max": "budget",
}

_MAX_DIGITS = 18
_REASONS = {reason.encode(): reason for reason in PAUSE_REASONS}
# Each Bulk budget field: its key in the hash, its family, and the end of its sample line's labels.
_BULK_SAMPLES = tuple((f"{budget}_{end}".encode(), f"crmsync_bulk_budget_{end}", f',budget="{budget}"}} ')
                      for budget in BULK_BUDGETS for end in ("remaining", "max"))
_ORG_FIELDS = ("used", "max")


def _count(value: Any) -> int | None:
    """A non-negative whole number from a Redis reply, or ``None`` for anything else."""
    if type(value) is bytes and len(value) <= _MAX_DIGITS and value.isdigit():
        return int(value)  # the usual case, first: this runs about five times per tenant per scrape
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        return None
    digits = value.strip()
    # bytes.isdigit() is ASCII digits only (str.isdigit() also accepts "²", which int() refuses); and short, as
    # int() refuses strings of thousands of digits.
    return int(digits) if len(digits) <= _MAX_DIGITS and digits.isdigit() else None


def _timestamp(value: Any) -> float | None:
    """Epoch seconds from a Redis reply (written as a float), or ``None`` for anything else."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass
class TenantScrape:
    """One scrape's samples, as exposition lines (``name{labels} value``) per family, and its own gauges."""

    lines: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in TENANT_GAUGES})
    success: int = 1
    tenants: int = 0
    errors: int = 0
    seconds: float = 0.0

    def meta(self) -> dict[str, float]:
        """The scrape's own gauges by name."""
        return {"crmsync_tenant_scrape_success": self.success, "crmsync_tenants": self.tenants,
                "crmsync_tenant_scrape_errors": self.errors, "crmsync_tenant_scrape_duration_seconds": self.seconds}

    def render(self, header: Callable[[str], str], names: Iterable[str] | None = None) -> str:
        """Every family (or those in ``names``) in the exposition format: ``header(name)`` gives its ``# HELP`` and
        ``# TYPE`` lines in the format asked for; the sample lines are the same in both text formats."""
        wanted = None if names is None else set(names)
        parts: list[str] = []
        for name, lines in self.lines.items():
            if wanted is None or name in wanted:
                parts.append(header(name))
                parts.extend(lines)
        for name, sample in self.meta().items():
            if wanted is None or name in wanted:
                parts.append(header(name))
                parts.append(f"{name} {float(sample)!r}\n")
        return "".join(parts)


def family(name: str) -> GaugeMetricFamily:
    """An empty family of ``name`` (a tenant gauge or a scrape gauge), with its help and labels."""
    if name in TENANT_GAUGES:
        labels = ["tenant", _SECOND_LABEL[name]] if name in _SECOND_LABEL else ["tenant"]
        return GaugeMetricFamily(name, TENANT_GAUGES[name], labels=labels)
    return GaugeMetricFamily(name, META_GAUGES[name])


class TenantCollector:
    """Per-tenant gauges, read from Redis on every ``scrape``.

    ``clock`` pins "now" for the window computation (tests); by default the Redis server's TIME decides,
    as it does for every take. ``chunk`` tenants go in one pipelined round trip. ``shard`` limits it to the
    tenants of one shard.
    """

    def __init__(self, client: Client, *, clock: Clock | None = None, chunk: int = 1000,
                 shard: Shard | None = None) -> None:
        self.redis = raw_replies(client)
        self.clock = clock
        self.chunk = max(1, chunk)
        self.shard = shard or Shard()
        self._may_load = True  # until Redis refuses SCRIPT LOAD to this user

    def scrape(self) -> TenantScrape:
        """Read every tenant (of the shard) from Redis; never raises for what Redis holds or for Redis failing."""
        started = time.perf_counter()
        result = TenantScrape()
        try:
            tenants, paused = registry(self.redis)
            if self.shard.count > 1:
                tenants = sorted({t for t in (*tenants, *paused) if self.shard.holds(t)})
            else:
                tenants = sorted({*tenants, *paused})
            self._may_load = ensure_meter(self.redis, may_load=self._may_load)
            result.errors = self._read(tenants, paused, result)
            result.tenants = len(tenants)
        except redis.RedisError as exc:
            # A partial cluster picture would read as tenants vanishing; report none and say the scrape failed.
            log.warning("tenant_metrics_unavailable", error=f"{type(exc).__name__}: {exc}")
            result = TenantScrape(success=0)
        result.seconds = time.perf_counter() - started
        return result

    def _read(self, tenants: list[str], paused: set[str], out: TenantScrape) -> int:
        now = "" if self.clock is None else str(int(self.clock()))
        org_fields = list(_ORG_FIELDS)

        def commands(tenant: str) -> list[tuple[Any, ...]]:
            queued = [meter_command(tenant, now), ("HMGET", keys.org_usage(tenant), *org_fields),
                      ("HGETALL", keys.bulk_budget(tenant))]
            if tenant in paused:
                queued += [("HGETALL", keys.pause(tenant)), ("ZCARD", keys.parked(tenant)),
                           ("ZCARD", keys.parked_essential(tenant))]
            return queued

        lines = out.lines
        failures: dict[str, bool] = {}
        pending: list[tuple[str, int]] = []
        for tenant, replies in pipelined(self.redis, tenants, commands, self.chunk):
            label = f'{{tenant="{tenant}"'  # ids match TENANT_PATTERN: nothing to escape
            # A daily counter that is not the one declared is read again below, declaring the right one.
            failed = not defer(tenant, replies[0], pending) and _quota(tenant, replies[0], lines)
            failed |= _org(label, replies[1], lines)
            failed |= _bulk(label, replies[2], lines)
            if len(replies) == 3:
                lines["crmsync_tenant_paused"].append(f'crmsync_tenant_paused{label},reason=""}} 0\n')
                lines["crmsync_parked_jobs"].append(f"crmsync_parked_jobs{label}}} 0\n")
            else:
                failed |= _pause(label, replies[3], lines)
                failed |= _parked(label, replies[4], replies[5], lines)
            failures[tenant] = failed
        for tenant, reply in settle(self.redis, pending, now, self.chunk):
            failures[tenant] |= _quota(tenant, reply, lines)
        return sum(failures.values())


def _quota(tenant: str, reply: Any, lines: dict[str, list[str]]) -> bool:
    """Add the bucket's gauges; return whether the read failed."""
    reading = Reading.parse(reply)
    if reading is None:
        return True  # e.g. WRONGTYPE inside the script: the config key is no hash
    learn(tenant, reading)
    label = f'{{tenant="{tenant}"'
    lines["crmsync_quota_used"].append(f"crmsync_quota_used{label}}} {reading.used}\n")
    lines["crmsync_quota_remaining"].append(f"crmsync_quota_remaining{label}}} {reading.remaining}\n")
    if reading.valid:  # unset and invalid limits grant nothing and have no reset
        lines["crmsync_quota_limit"].append(f"crmsync_quota_limit{label}}} {reading.limit}\n")
        lines["crmsync_quota_reset_timestamp_seconds"].append(
            f"crmsync_quota_reset_timestamp_seconds{label}}} {reading.resets_at}\n")
        lines["crmsync_quota_reserve"].append(f"crmsync_quota_reserve{label}}} {reading.reserve}\n")
        lines["crmsync_quota_window_info"].append(f'crmsync_quota_window_info{label},window="{reading.mode}"}} 1\n')
    return False


def _pause(label: str, reply: Any, lines: dict[str, list[str]]) -> bool:
    if not isinstance(reply, dict):
        return True
    if not reply:
        lines["crmsync_tenant_paused"].append(f'crmsync_tenant_paused{label},reason=""}} 0\n')
        return False
    reason = _REASONS.get(reply.get(b"reason", b""), "other")
    lines["crmsync_tenant_paused"].append(f'crmsync_tenant_paused{label},reason="{reason}"}} 1\n')
    return False


def _parked(label: str, normal: Any, essential: Any, lines: dict[str, list[str]]) -> bool:
    """Add the parked jobs, essential and normal ones together."""
    counts = _count(normal), _count(essential)
    if counts[0] is None or counts[1] is None:
        return True
    lines["crmsync_parked_jobs"].append(f"crmsync_parked_jobs{label}}} {counts[0] + counts[1]}\n")
    return False


def _org(label: str, reply: Any, lines: dict[str, list[str]]) -> bool:
    if not isinstance(reply, list) or len(reply) != 2:
        return True
    if reply == [None, None]:
        return False  # Salesforce has not reported usage for this tenant yet
    used, maximum = _count(reply[0]), _count(reply[1])
    if used is None or maximum is None:
        return True
    lines["crmsync_org_api_usage"].append(f"crmsync_org_api_usage{label}}} {used}\n")
    lines["crmsync_org_api_max"].append(f"crmsync_org_api_max{label}}} {maximum}\n")
    return False


def _bulk(label: str, reply: Any, lines: dict[str, list[str]]) -> bool:
    """Add the Bulk budget gauges, each field on its own: a value that is no number drops only its series."""
    if not isinstance(reply, dict):
        return True
    if not reply:
        return False  # not read yet
    failed = False
    for key, name, suffix in _BULK_SAMPLES:
        raw = reply.get(key)
        if raw is not None:
            count = _count(raw)
            if count is None:
                failed = True
            else:
                lines[name].append(f"{name}{label}{suffix}{count}\n")
    if b"at" in reply:
        at = _timestamp(reply[b"at"])
        if at is None:
            failed = True
        else:
            lines["crmsync_bulk_budget_read_timestamp_seconds"].append(
                f"crmsync_bulk_budget_read_timestamp_seconds{label}}} {at!r}\n")
    return failed


class RedisPolicyCollector:
    """A prometheus-client collector of ``crmsync_redis_maxmemory_policy_info``, read with ``INFO`` on every
    ``collect``: value 1, the policy as its label (and on a Redis Cluster each node's, the node as ``node``
    label); absent when Redis cannot be asked (the tenant gauges' own ``crmsync_tenant_scrape_success`` says so).
    """

    NAME = "crmsync_redis_maxmemory_policy_info"
    HELP = ("Redis's maxmemory-policy as the policy label (on a Redis Cluster one series per node), value 1: any "
            "policy but noeviction may evict credit windows, and an evicted window is a full bucket")

    def __init__(self, client: Client) -> None:
        self.redis = client
        self.labels = ["policy", "node"] if isinstance(client, redis.RedisCluster) else ["policy"]

    def describe(self) -> Iterable[Metric]:
        """The family this collector reports, without reading Redis (registration calls this)."""
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=self.labels)]

    def collect(self) -> Iterable[Metric]:
        """Read the policy from Redis and report it; never raises."""
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=self.labels)
        try:
            policies = redis_policies(self.redis)
        except redis.ResponseError as exc:  # e.g. INFO refused to this user; an unreachable Redis is logged apart
            log.warning("redis_policy_unreadable", error=f"{type(exc).__name__}: {exc}")
            policies = []
        except redis.RedisError:
            policies = []
        for node, policy in policies:
            if policy is not None:
                family.add_metric([policy, node][:len(self.labels)], 1)
        yield family
