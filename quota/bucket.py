"""The credit bucket: each tenant's daily API credits in Redis, metered by one atomic Lua script."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

import redis

from quota import keys
from quota.direct import DirectConnections
from quota.errors import InvalidInput, QuotaUnavailable
from quota.replies import text
from quota.scripts import CONFIGURE, METER
from quota.validation import TENANT_PATTERN, parse_limit, parse_reset_time, validate_tenant

__all__ = ["AuditEntry", "Clock", "CreditBucket", "Grant", "LimitState", "Status", "meter_call"]

LimitState = Literal["ok", "unset", "invalid"]
_STATES: dict[int, LimitState] = {0: "ok", 1: "unset", 2: "invalid"}


class Clock(Protocol):
    """Returns the current time in epoch seconds. Tests inject one; production uses the Redis server's TIME."""

    def __call__(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of a take. Pass it to ``refund(grant=...)`` to return credits that were never spent."""

    granted: bool
    remaining: int
    limit: int
    resets_at: datetime
    window_end: int


@dataclass(frozen=True, slots=True)
class Status:
    """A tenant's bucket as it stands. ``limit`` is ``None`` unless ``limit_state`` is ``"ok"``."""

    tenant: str
    limit: int | None
    limit_state: LimitState
    used: int
    remaining: int
    resets_at: datetime
    reset_at: str
    raw_limit: str | None
    config_error: str | None = None

    @property
    def percent_used(self) -> float | None:
        """Share of the limit used, in percent, or ``None`` without a valid limit."""
        return None if not self.limit else 100.0 * self.used / self.limit


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to a tenant's quota config."""

    at: datetime
    actor: str
    field: str
    old: str | None
    new: str



def _config_error(raw_limit: str | None, raw_reset_at: str | None) -> str:
    """Say which hand-written config value the metering script refused."""
    problems = []
    for value, check in ((raw_limit, parse_limit), (raw_reset_at, parse_reset_time)):
        try:
            if value is not None:
                check(value)
        except InvalidInput as exc:
            problems.append(str(exc))
    return "; ".join(problems) or "invalid reset_from in config"


def meter_call(tenant: str, delta: int, now: str, window_end: int | None = None,
               grace: int = 0) -> tuple[list[str], list[Any]]:
    """The meter script's KEYS and ARGV for ``tenant``, in the order ``scripts/meter.lua`` declares them.

    ``now`` is epoch seconds or ``""`` for the server's clock; ``delta`` 0 only reads (the script writes only
    on takes and refunds, so ``grace`` does not matter then).
    """
    return [keys.config(tenant), keys.window_prefix(tenant)], [delta, now, "" if window_end is None else window_end,
                                                              grace]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class CreditBucket:
    """Per-tenant API credits that refill to the tenant's CRM API daily limit at its reset time each day.

    Every method validates the tenant id first. Redis errors surface as ``QuotaUnavailable``: when Redis
    cannot be reached, no credit is ever granted. Takes and refunds run on a connection per thread of
    their own (see ``quota.direct``), built from ``client``'s settings; ``close()`` closes them.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Clock | None = None,
        grace_seconds: int = 3600,
        max_audit: int = 1000,
    ) -> None:
        self.redis = client
        self._direct = DirectConnections(client.connection_pool)
        self._clock = clock
        self._grace = grace_seconds
        self._max_audit = max_audit

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **redis_options: Any) -> CreditBucket:
        """Connect to Redis at ``url`` (``redis://`` or ``rediss://``, ACL user and password in the URL).

        ``redis_options`` go to ``redis.Redis.from_url`` (timeouts, for example).
        """
        return cls(redis.Redis.from_url(url, **redis_options), clock=clock)

    def close(self) -> None:
        """Close the bucket's own connections (the client's pool is the caller's to close)."""
        self._direct.close()

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock()))

    def _meter(self, tenant: str, delta: int, window_end: int | None = None) -> list[int]:
        validate_tenant(tenant)
        try:
            result: list[int] = METER(self._direct.execute, *meter_call(tenant, delta, self._now_arg(), window_end,
                                                                          self._grace))
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"credit bucket unavailable: {exc.__class__.__name__}: {exc}") from exc
        return result

    @staticmethod
    def _count(n: object) -> int:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidInput(f"credit count must be a whole number >= 1, got {n!r}")
        return n

    def take(self, tenant: str, n: int = 1) -> Grant:
        """Take ``n`` credits, all or nothing. A refused take changes nothing."""
        outcome, remaining, limit, window_end, _used, _state = self._meter(tenant, self._count(n))
        return Grant(bool(outcome), remaining, limit, _utc(window_end), window_end)

    def refund(self, tenant: str, n: int = 1, *, grant: Grant | None = None) -> int:
        """Return ``n`` credits that were taken but never spent; return how many went back.

        With ``grant``, credits go back only if the window they were taken in is still open. Used credits
        never drop below zero, so the bucket never holds more than the limit.
        """
        window_end = grant.window_end if grant is not None else None
        refunded: int = self._meter(tenant, -self._count(n), window_end)[0]
        return refunded

    def status(self, tenant: str) -> Status:
        """Read the tenant's bucket without changing it."""
        _, remaining, limit, window_end, used, state = self._meter(tenant, 0)
        try:
            raw_limit, reset_at = cast(list[Any], self.redis.hmget(keys.config(tenant), ["limit", "reset_at"]))
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"quota config unavailable: {exc}") from exc
        return Status(
            tenant=tenant,
            limit=limit if state == 0 else None,
            limit_state=_STATES[state],
            used=used,
            remaining=remaining,
            resets_at=_utc(window_end),
            reset_at=text(reset_at) or "00:00",
            raw_limit=text(raw_limit),
            config_error=_config_error(text(raw_limit), text(reset_at)) if state == 2 else None,
        )

    def set_limit(self, tenant: str, limit: object, *, actor: str, reset_at: str | None = None) -> Status:
        """Set the tenant's CRM API daily limit (and optionally its UTC reset time ``HH:MM``).

        Raises ``InvalidLimit`` for anything but a whole number >= 100,000, and ``InvalidResetTime`` for a
        bad time, before anything is written. Takes in every process see the new limit on their next call.
        """
        fields: dict[str, str] = {"limit": str(parse_limit(limit))}
        if reset_at is not None:
            parse_reset_time(reset_at)
            fields["reset_at"] = reset_at
        return self._configure(tenant, fields, actor=actor)

    def _configure(self, tenant: str, fields: dict[str, str], *, actor: str) -> Status:
        if not actor or not isinstance(actor, str):
            raise InvalidInput("actor must name who makes the change")
        before = self.status(tenant)
        reset_from = ""
        if "reset_at" in fields and fields["reset_at"] != before.reset_at and before.limit_state == "ok":
            # The window already open keeps its end, so a new reset time never refills a bucket early.
            reset_from = str(int(before.resets_at.timestamp()))
        args: list[Any] = [actor, self._now_arg(), self._max_audit, reset_from]
        for field, value in fields.items():
            args += [field, value]
        try:
            self.redis.sadd(keys.TENANTS, tenant)
            CONFIGURE(self.redis.execute_command, [keys.config(tenant), keys.audit(tenant)], args)
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"quota config unavailable: {exc}") from exc
        return self.status(tenant)

    def history(self, tenant: str) -> list[AuditEntry]:
        """The tenant's config changes, newest first."""
        validate_tenant(tenant)
        try:
            rows = cast(list[Any], self.redis.lrange(keys.audit(tenant), 0, -1))
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"quota config unavailable: {exc}") from exc
        entries = []
        for row in rows:
            try:
                data = json.loads(row)
                entries.append(
                    AuditEntry(_utc(data["at"]), str(data["actor"]), str(data["field"]), data["old"], data["new"])
                )
            except (ValueError, KeyError, TypeError):
                continue  # a hand-written line in the trail is skipped, never fatal
        return entries

    def tenants(self) -> list[str]:
        """Every tenant with quota config, sorted."""
        try:
            members = cast(set[Any], self.redis.smembers(keys.TENANTS))
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"quota config unavailable: {exc}") from exc
        # A member written by hand that is no valid tenant id is left out rather than failing every listing.
        return sorted(t for t in (text(m) for m in members) if t and TENANT_PATTERN.fullmatch(t))
