"""The credit bucket: each tenant's daily API credits in Redis, metered by one atomic Lua script."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

import redis

from quota import keys
from quota.connection import RedisClient, connect
from quota.direct import ClusterConnections, DirectConnections
from quota.errors import InvalidInput, InvalidReserve, InvalidResetTime, InvalidWindow, QuotaUnavailable
from quota.reading import REASONS, Reading, WindowMode, needed_window
from quota.replies import text
from quota.scripts import CONFIGURE, METER
from quota.validation import (
    TENANT_PATTERN,
    parse_limit,
    parse_reserve,
    parse_reset_time,
    parse_window,
    validate_tenant,
)
from quota.windows import DAILY_ENDS

__all__ = ["AuditEntry", "Clock", "CreditBucket", "Grant", "LimitState", "Status", "WindowMode", "meter_call"]

LimitState = Literal["ok", "unset", "invalid"]
_STATES: dict[int, LimitState] = {0: "ok", 1: "unset", 2: "invalid"}


class Clock(Protocol):
    """Returns the current time in epoch seconds. Tests inject one; production uses the Redis server's TIME."""

    def __call__(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of a take. Pass it to ``refund(grant=...)`` to return credits that were never spent.

    ``remaining`` includes the reserve; ``resets_at`` is when the next credits come back; ``window_end`` is
    where the credits went (the window's end in daily mode, the hour's start in rolling mode); ``window`` is
    the tenant's window mode.
    """

    granted: bool
    remaining: int
    limit: int
    resets_at: datetime
    window_end: int
    reserve: int = 0
    taken: int = 0
    window: WindowMode = "daily"

    @property
    def reserve_only(self) -> bool:
        """Refused although credits are left: only the reserve, kept for essential work, is."""
        return not self.granted and self.remaining > 0


@dataclass(frozen=True, slots=True)
class Status:
    """A tenant's bucket as it stands. ``limit`` is ``None`` unless ``limit_state`` is ``"ok"``.

    ``remaining`` includes the ``reserve``; ``available`` is what normal (not essential) work may still take.
    ``resets_at`` is when the next credits come back: the reset in daily mode; in rolling mode, when the
    oldest credits of the last 24 hours do (now, when none are used).
    """

    tenant: str
    limit: int | None
    limit_state: LimitState
    used: int
    remaining: int
    resets_at: datetime
    reset_at: str
    raw_limit: str | None
    config_error: str | None = None
    window: WindowMode = "daily"
    reserve: int = 0

    @property
    def available(self) -> int:
        """Credits normal work may still take: what remains above the reserve."""
        return max(0, self.remaining - self.reserve)

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


_FIELDS = ("limit", "reset_at", "reset_from", "reserve", "window")


def _invalid_because(tenant: str, reason: int, raw: dict[str, str | None], window: WindowMode) -> str:
    """Say which value the metering script refused, and how it is put right."""
    field = REASONS.get(reason, "config")
    value = raw.get(field)
    checks = {"limit": parse_limit, "reset_at": parse_reset_time, "window": parse_window}
    if field in checks:
        try:
            checks[field](value)
        except InvalidInput as exc:
            return str(exc)
    if field == "reserve":
        return (f"reserve {value!r} is not a whole number below the limit: set it again with "
                f"`crmsync quota set {tenant} LIMIT --reserve N`")
    if field == "reset_from":
        return (f"reset_from {value!r} is not a moment within the next 24 hours: set the reset time again with "
                f"`crmsync quota set {tenant} LIMIT --reset-at HH:MM`")
    where = keys.rolling_window(tenant) if window == "rolling" else f"{keys.window_prefix(tenant)}<window end>"
    return (f"the window counter {where} holds something other than whole numbers >= 0 (written by hand?), so "
            "what was spent is unknown and nothing is granted; a daily counter is left behind when its window "
            "ends, a rolling one must be corrected or deleted by an admin who knows what was spent")


# A daily-mode call declares the counter it believes open; a wrong guess costs a retry, a second one only when
# the window ended between the two calls, and a third could only follow a reset time changed meanwhile.
_KEY_ATTEMPTS = 4


def meter_call(tenant: str, delta: int, now: str, window_end: int | None = None, *,
               grace: int = 0, essential: bool = False, counter_end: int | None = None,
               mode: WindowMode | None = None) -> tuple[list[str], list[Any]]:
    """The meter script's KEYS and ARGV for ``tenant``, in the order ``scripts/meter.lua`` declares them.

    ``now`` is epoch seconds or ``""`` for the server's clock; ``delta`` 0 only reads (the script writes only
    on takes and refunds, so ``grace`` does not matter then); ``essential`` takes may use the reserve.
    ``counter_end`` is the end of the daily window whose counter is declared: by default this process's guess
    (``quota.windows.DAILY_ENDS``). A reply ``{-1, END}`` (``quota.reading.needed_window``) asks for the call
    again with ``counter_end=END``. ``mode``: refunds only, the window mode of the take (none back in the other).
    """
    if counter_end is None:
        counter_end = DAILY_ENDS.guess(tenant, float(now) if now else time.time())
    return ([keys.config(tenant), keys.daily_counter(tenant, counter_end), keys.rolling_window(tenant)],
            [delta, now, "" if window_end is None else window_end, grace, "1" if essential else "", mode or ""])


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class CreditBucket:
    """Per-tenant API credits up to the tenant's CRM API daily limit. In ``daily`` mode they all come back at the
    tenant's reset time each day; in ``rolling`` mode each comes back 24 to 25 hours after it was taken.

    Every method validates the tenant id first. Redis errors surface as ``QuotaUnavailable``: when Redis
    cannot be reached, no credit is ever granted. Takes and refunds run on a connection per thread of
    their own (see ``quota.direct``), built from ``client``'s settings; ``close()`` closes them.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        clock: Clock | None = None,
        grace_seconds: int = 3600,
        max_audit: int = 1000,
    ) -> None:
        # Typed as a redis.Redis for its users: a RedisCluster serves the same one-slot commands.
        self.redis: redis.Redis = cast(redis.Redis, client)
        self._direct: DirectConnections | ClusterConnections = (
            ClusterConnections(client) if isinstance(client, redis.RedisCluster)
            else DirectConnections(client.connection_pool))
        self._clock = clock
        self._grace = grace_seconds
        self._max_audit = max_audit

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **redis_options: Any) -> CreditBucket:
        """Connect to Redis at ``url``: one node (``redis://``, ``rediss://``, ``unix://``) or a Redis Cluster
        (``redis+cluster://``, ``rediss+cluster://``), ACL user and password in the URL (``quota.connection``).

        ``redis_options`` go to the client (timeouts, for example).
        """
        return cls(connect(url, **redis_options), clock=clock)

    def close(self) -> None:
        """Close the bucket's own connections (the client's pool is the caller's to close)."""
        self._direct.close()

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock()))

    def _meter(self, tenant: str, delta: int, window_end: int | None = None, essential: bool = False,
               mode: WindowMode | None = None) -> Reading:
        validate_tenant(tenant)
        now, counter_end = self._now_arg(), None
        try:
            for _ in range(_KEY_ATTEMPTS):
                reply = METER(self._direct.execute, *meter_call(tenant, delta, now, window_end, grace=self._grace,
                                                                essential=essential, counter_end=counter_end,
                                                                mode=mode))
                counter_end = needed_window(reply)
                if counter_end is None:
                    break
                DAILY_ENDS.learn(tenant, counter_end)
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"credit bucket unavailable: {exc.__class__.__name__}: {exc}") from exc
        reading = Reading.parse(reply)
        if reading is None:
            raise QuotaUnavailable(f"credit bucket unavailable: unexpected meter reply {reply!r}")
        if reading.mode == "daily":
            DAILY_ENDS.learn(tenant, reading.window)
        return reading

    @staticmethod
    def _count(n: object) -> int:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidInput(f"credit count must be a whole number >= 1, got {n!r}")
        return n

    def take(self, tenant: str, n: int = 1, *, essential: bool = False) -> Grant:
        """Take ``n`` credits, all or nothing. A refused take changes nothing.

        Normal takes stop where the tenant's reserve begins; ``essential`` ones may use the reserve.
        """
        count = self._count(n)
        got = self._meter(tenant, count, essential=bool(essential))
        return Grant(bool(got.outcome), got.remaining, got.limit, _utc(got.resets_at), got.window, got.reserve,
                     count if got.outcome else 0, got.mode)

    def refund(self, tenant: str, n: int = 1, *, grant: Grant | None = None) -> int:
        """Return ``n`` credits that were taken but never spent; return how many went back.

        With ``grant``, at most what that take took goes back, and only while the credits still count where
        they were taken (the same daily window; in rolling mode, an hour of the last 24). Used credits never
        drop below zero, so the bucket never holds more than the limit.
        """
        count = self._count(n)
        if grant is not None:
            count = min(count, grant.taken)
            if count == 0:
                validate_tenant(tenant)
                return 0
        if grant is None:
            return self._meter(tenant, -count).outcome
        return self._meter(tenant, -count, grant.window_end, mode=grant.window).outcome

    def status(self, tenant: str) -> Status:
        """Read the tenant's bucket without changing it. An invalid tenant's status says why it is invalid."""
        got = self._meter(tenant, 0)
        try:
            values = cast(list[Any], self.redis.hmget(keys.config(tenant), list(_FIELDS)))
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"quota config unavailable: {exc}") from exc
        raw = {field: text(value) for field, value in zip(_FIELDS, values, strict=True)}
        return Status(
            tenant=tenant,
            limit=got.limit if got.valid else None,
            limit_state=_STATES.get(got.state, "invalid"),
            used=got.used,
            remaining=got.remaining,
            resets_at=_utc(got.resets_at),
            reset_at=raw["reset_at"] or "00:00",
            raw_limit=raw["limit"],
            config_error=None if got.valid or got.state == 1 else _invalid_because(tenant, got.reason, raw, got.mode),
            window=got.mode,
            reserve=got.reserve,
        )

    def set_limit(self, tenant: str, limit: object, *, actor: str, reset_at: str | None = None,
                  window: str | None = None, reserve: object = None) -> Status:
        """Set the tenant's CRM API daily limit, and optionally its UTC reset time ``HH:MM``, its window mode
        (``daily`` or ``rolling``) and its reserve for essential work (``None`` keeps what is set).

        Raises ``InvalidLimit``, ``InvalidResetTime``, ``InvalidWindow`` or ``InvalidReserve`` (a reserve must
        stay below the limit, the stored one included) before anything is written. The change is read and
        written in one atomic step, and the credits used so far follow it: no change grants extra. Takes in
        every process see it on their next call.
        """
        validate_tenant(tenant)
        number = parse_limit(limit)
        fields: dict[str, str] = {"limit": str(number)}
        if reset_at is not None:
            parse_reset_time(reset_at)
            fields["reset_at"] = reset_at
        if window is not None:
            fields["window"] = parse_window(window)
        if reserve is not None:
            fields["reserve"] = str(parse_reserve(reserve, number))
        return self._configure(tenant, fields, actor=actor)

    def _configure(self, tenant: str, fields: dict[str, str], *, actor: str) -> Status:
        if not actor or not isinstance(actor, str):
            raise InvalidInput("actor must name who makes the change")
        now = self._now_arg()
        args: list[Any] = [actor, now, self._max_audit, self._grace]
        for field, value in fields.items():
            args += [field, value]
        old_end = new_end = DAILY_ENDS.guess(tenant, float(now) if now else time.time())
        try:
            for _ in range(_KEY_ATTEMPTS):
                reply = CONFIGURE(self.redis.execute_command, [
                    keys.config(tenant), keys.audit(tenant), keys.daily_counter(tenant, old_end),
                    keys.rolling_window(tenant), keys.daily_counter(tenant, new_end),
                ], args)
                if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == -1):
                    break
                # The counters the change needs (0: none): declared on the next call.
                old_end, new_end = reply[1] or old_end, reply[2] or new_end
            _changed, refused = reply
            DAILY_ENDS.forget(tenant)  # the reset time may have moved the open window's end
            if refused:
                stored = text(self.redis.hget(keys.config(tenant), REASONS[refused]))
            else:
                # After the config, so a refused change writes nothing at all.
                self.redis.sadd(keys.TENANTS, tenant)
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"quota config unavailable: {exc}") from exc
        if refused:
            raise _refusal(tenant, REASONS[refused], stored, fields)
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


def _refusal(tenant: str, field: str, stored: str | None, fields: dict[str, str]) -> InvalidInput:
    """The error for a change the configure script refused: the merged config would not be valid."""
    if field == "reserve":
        return InvalidReserve(f"the reserve of {stored} credits stored for {tenant!r} is not below the new limit "
                              f"{int(fields['limit']):,}: lower it with --reserve, or raise the limit")
    option = {"reset_at": "--reset-at HH:MM", "window": "--window daily|rolling"}.get(field, f"--{field}")
    error = {"reset_at": InvalidResetTime, "window": InvalidWindow}.get(field, InvalidInput)
    return error(f"the {field} stored for {tenant!r} ({stored!r}) is invalid: replace it with {option}")
