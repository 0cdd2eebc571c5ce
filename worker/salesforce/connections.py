"""Tenant connections: which Salesforce org each tenant syncs with, and how to get its tokens.

One connection per tenant, in a Redis hash; connecting again replaces it. A tenant may move from a sandbox to
production, never back: once it has been connected to production, a sandbox connect is refused and nothing is
written (as Marketo Measure does), so production data never flows into a sandbox sync by mistake.

Secrets (client secret, JWT private key, refresh token) are never stored: only a reference to where they live
(``file:/abs/path`` or ``env:NAME``), checked for readability at connect time and read again when a token is
needed. Access tokens are never stored either (see ``worker.salesforce.oauth``).

Secrets go only where they belong: a reference must name a file inside ``CRMSYNC_SECRET_DIRS`` or a
``CRMSYNC_SECRET_*`` variable (``worker.secrets``), and the login URL, where token requests carry them, must be
a Salesforce login host or one listed in ``CRMSYNC_LOGIN_HOSTS`` (``check_login_url``). Connect refuses
anything else; the worker checks both again before each token request, so a connection stored before these
rules, or written by hand, gets no further.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from quota.replies import text
from quota.validation import TENANT_PATTERN, validate_tenant
from worker import keys
from worker.errors import ConnectionRefused, NotConnected, SecretUnavailable
from worker.secrets import env_ref, file_ref, read_secret
from worker.settings import SecretSettings

__all__ = [
    "Connection",
    "ConnectionStore",
    "Environment",
    "GrantType",
    "check_login_url",
]

Environment = Literal["sandbox", "production"]
GrantType = Literal["client_credentials", "jwt_bearer", "refresh_token"]

_ENVIRONMENTS: tuple[Environment, ...] = ("sandbox", "production")
_GRANTS: tuple[GrantType, ...] = ("client_credentials", "jwt_bearer", "refresh_token")
_REQUIRED_FIELDS = ("connection_id", "environment", "login_url", "client_id", "grant", "connected_at")
_OPTIONAL_FIELDS = ("client_secret_ref", "private_key_ref", "refresh_token_ref", "username", "ca_bundle")
_SALESFORCE_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# My Domain login hosts: NAME.my.salesforce.com, and a sandbox's NAME--SANDBOX.sandbox.my.salesforce.com.
_MY_DOMAIN = re.compile(rf"{_LABEL}\.my\.salesforce\.com|{_LABEL}--{_LABEL}\.sandbox\.my\.salesforce\.com")
_HTTPS_PORT = 443


@dataclass(frozen=True)
class Connection:
    """A tenant's connection to one Salesforce org. Holds references to secrets, never secrets."""

    tenant: str
    connection_id: str
    environment: Environment
    login_url: str
    client_id: str
    grant: GrantType
    client_secret_ref: str | None
    private_key_ref: str | None
    refresh_token_ref: str | None
    username: str | None
    ca_bundle: str | None
    connected_at: datetime
    ever_production: bool

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able values (references, not secrets)."""
        return {
            "tenant": self.tenant,
            "connection_id": self.connection_id,
            "environment": self.environment,
            "login_url": self.login_url,
            "client_id": self.client_id,
            "grant": self.grant,
            "client_secret_ref": self.client_secret_ref,
            "private_key_ref": self.private_key_ref,
            "refresh_token_ref": self.refresh_token_ref,
            "username": self.username,
            "ca_bundle": self.ca_bundle,
            "connected_at": self.connected_at.isoformat(),
            "ever_production": self.ever_production,
        }


class ConnectionStore:
    """Tenants' connections in Redis.

    Redis errors (``redis.RedisError``) propagate unchanged; the CLI turns them into a one-line failure.
    """

    def __init__(self, client: redis.Redis, *, secrets: SecretSettings | None = None) -> None:
        self.redis = client
        # Where connect lets secrets come from and go to; None: read from the environment at each connect.
        self.secrets = secrets

    def connect(self, tenant: str, *, environment: str, login_url: str, client_id: str,
                client_secret_file: str | None = None, client_secret_env: str | None = None,
                private_key_file: str | None = None, username: str | None = None,
                refresh_token_file: str | None = None, ca_bundle: str | None = None) -> Connection:
        """Connect ``tenant`` to an org, replacing its current connection, and return the new one.

        The grant follows from the options: a client secret alone is ``client_credentials``; a private key and
        a username is ``jwt_bearer``; a refresh token (with an optional client secret) is ``refresh_token``.
        Every referenced secret must be readable now, from a secret directory or a ``CRMSYNC_SECRET_*`` variable;
        it is checked, not stored. Raises ``ConnectionRefused`` (nothing written) for bad input, a login URL that
        is not an allowed login host, a missing or misplaced secret, or a sandbox after production.
        """
        validate_tenant(tenant)
        settings = self._secret_settings()
        env = _environment(environment)
        url = check_login_url(login_url, settings)
        client_id = _one_line("client id", client_id)
        secret_ref = _client_secret_ref(client_secret_file, client_secret_env, settings)
        grant = _grant(secret_ref, private_key_file, username, refresh_token_file)
        key_ref = _checked_ref(file_ref, private_key_file, "private key", settings) if private_key_file else None
        if key_ref is not None:
            _check_private_key(key_ref, settings)
        refresh_ref = _checked_ref(file_ref, refresh_token_file, "refresh token", settings) \
            if refresh_token_file else None
        subject = _one_line("username", username) if username is not None else None
        bundle = _ca_bundle(ca_bundle) if ca_bundle is not None else None

        connection = Connection(
            tenant=tenant, connection_id=uuid.uuid4().hex, environment=env, login_url=url, client_id=client_id,
            grant=grant, client_secret_ref=secret_ref, private_key_ref=key_ref, refresh_token_ref=refresh_ref,
            username=subject, ca_bundle=bundle, connected_at=datetime.now(UTC),
            ever_production=env == "production",
        )
        connection = self._write(connection)
        # The index is written after the hash, outside its transaction (another slot in a Redis Cluster), so a
        # refused connect writes nothing at all. Should this call fail, the connection is in place and get() finds
        # it; only the listing misses it until the next connect. SADD is idempotent.
        self.redis.sadd(keys.CONNECTIONS, tenant)
        return connection

    def _secret_settings(self) -> SecretSettings:
        if self.secrets is not None:
            return self.secrets
        try:
            return SecretSettings.from_env()
        except ValueError as exc:  # a malformed CRMSYNC_SECRET_DIRS / CRMSYNC_LOGIN_HOSTS: one line, exit 2
            raise ConnectionRefused(str(exc)) from None

    def _write(self, connection: Connection) -> Connection:
        key = keys.connection(connection.tenant)
        # WATCH makes "was it ever production?" and the write one step: two concurrent connects cannot both
        # pass the check against a state the other one is changing.
        # transaction=True: redis.Redis's default, and on a Redis Cluster the one kind of pipeline that may
        # WATCH (the key is one slot).
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves watch() untyped
                    ever_production = text(pipe.hget(key, "ever_production")) == "1"
                    if ever_production and connection.environment == "sandbox":
                        raise ConnectionRefused(
                            f"tenant {connection.tenant!r} has been connected to a production org and cannot be "
                            "connected to a sandbox: once on production, a tenant stays on production "
                            "(use a new tenant id for sandbox syncs)"
                        )
                    # No flag to carry over: a tenant that was ever on production can only be connected to
                    # production again, so the new connection's own flag is already true.
                    pipe.multi()
                    pipe.delete(key)
                    pipe.hset(key, mapping=_to_hash(connection))
                    pipe.execute()
                    return connection
                except redis.WatchError:
                    continue

    def get(self, tenant: str) -> Connection:
        """The tenant's connection; raises ``NotConnected`` if it has none."""
        validate_tenant(tenant)
        fields = cast(Mapping[Any, Any], self.redis.hgetall(keys.connection(tenant)))
        return _from_hash(tenant, fields)

    def all(self) -> list[Connection]:
        """Every tenant's connection, by tenant id."""
        members = cast(set[Any], self.redis.smembers(keys.CONNECTIONS))
        tenants = sorted(t for t in (text(m) for m in members) if t and TENANT_PATTERN.fullmatch(t))
        with self.redis.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.hgetall(keys.connection(tenant))
            rows = pipe.execute()
        connections = []
        for tenant, fields in zip(tenants, rows, strict=True):
            try:
                connections.append(_from_hash(tenant, fields))
            except NotConnected:
                # Listed but gone or unreadable: leave it out rather than failing every listing.
                continue
        return connections



def _to_hash(connection: Connection) -> dict[str, str]:
    values: dict[str, str | None] = {
        "connection_id": connection.connection_id,
        "environment": connection.environment,
        "login_url": connection.login_url,
        "client_id": connection.client_id,
        "grant": connection.grant,
        "client_secret_ref": connection.client_secret_ref,
        "private_key_ref": connection.private_key_ref,
        "refresh_token_ref": connection.refresh_token_ref,
        "username": connection.username,
        "ca_bundle": connection.ca_bundle,
        "connected_at": connection.connected_at.isoformat(),
        "ever_production": "1" if connection.ever_production else "0",
    }
    # A hash cannot hold None: an absent field means "not set".
    return {name: value for name, value in values.items() if value is not None}


def _from_hash(tenant: str, raw: Mapping[Any, Any]) -> Connection:
    fields = {text(k): text(v) for k, v in raw.items()}
    if not fields:
        raise NotConnected(tenant)
    missing = [name for name in _REQUIRED_FIELDS if not fields.get(name)]
    environment, grant = fields.get("environment"), fields.get("grant")
    try:
        connected_at = datetime.fromisoformat(fields.get("connected_at") or "")
    except ValueError:
        connected_at = None
    if missing or environment not in _ENVIRONMENTS or grant not in _GRANTS or connected_at is None \
            or connected_at.tzinfo is None:
        raise NotConnected(tenant, f"the stored connection of tenant {tenant!r} is incomplete or corrupt "
                                   "(missing or bad: " + ", ".join(missing or ["environment/grant/connected_at"])
                                   + "): run `crmsync connect` again")
    optional = {name: fields.get(name) or None for name in _OPTIONAL_FIELDS}
    return Connection(
        tenant=tenant,
        connection_id=cast(str, fields["connection_id"]),
        environment=environment,
        login_url=cast(str, fields["login_url"]),
        client_id=cast(str, fields["client_id"]),
        grant=grant,
        client_secret_ref=optional["client_secret_ref"],
        private_key_ref=optional["private_key_ref"],
        refresh_token_ref=optional["refresh_token_ref"],
        username=optional["username"],
        ca_bundle=optional["ca_bundle"],
        connected_at=connected_at.astimezone(UTC),
        ever_production=fields.get("ever_production") == "1",
    )


# --- connect input checks: each refuses with ConnectionRefused and a message that names no secret ---------------

def _environment(value: str) -> Environment:
    if value not in _ENVIRONMENTS:
        raise ConnectionRefused(f"invalid environment {value!r}: use sandbox or production")
    return value


def check_login_url(value: str, settings: SecretSettings) -> str:
    """``value`` as ``https://host[:port]`` if it is a login URL secrets may be sent to; else ``ConnectionRefused``.

    Allowed: ``https://login.salesforce.com``, ``https://test.salesforce.com``, a My Domain
    (``https://NAME.my.salesforce.com``, ``https://NAME--SANDBOX.sandbox.my.salesforce.com``), all on port 443,
    or a host listed in ``CRMSYNC_LOGIN_HOSTS`` (any port, or the one listed). The result is rebuilt from the
    parsed host and port, so what is checked is exactly where token requests go.
    """
    usage = ("use https://login.salesforce.com, https://test.salesforce.com or a My Domain "
             "(https://NAME.my.salesforce.com), or list the host in CRMSYNC_LOGIN_HOSTS")
    shown = _shown(value)
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port  # .port raises ValueError on a port that is not a number in range
    except ValueError:
        host, port = None, None
    if host is None or not value.isascii() or any(not ch.isprintable() or ch.isspace() for ch in value) \
            or parts.scheme != "https" or parts.path.rstrip("/"):
        # Plain http would send client secrets and assertions in clear text; the emulator serves HTTPS too.
        raise ConnectionRefused(f"invalid login URL {shown}: {usage} (https://host[:port], nothing more)")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        # User info moves the host ("https://x.my.salesforce.com@evil.example" goes to evil.example); a query or
        # a fragment has no meaning here.
        raise ConnectionRefused(f"invalid login URL {shown}: it must not carry user info, a query or a fragment")
    port = None if port == _HTTPS_PORT else port
    salesforce = port is None and (host in _SALESFORCE_LOGIN_HOSTS or _MY_DOMAIN.fullmatch(host) is not None)
    listed = any(host == allowed and (allowed_port is None or allowed_port == (port or _HTTPS_PORT))
                 for allowed, allowed_port in settings.login_hosts)
    if not (salesforce or listed):
        raise ConnectionRefused(f"invalid login URL {shown}: {host} is not a Salesforce login host: {usage}")
    netloc = f"[{host}]" if ":" in host else host
    return f"https://{netloc}" + (f":{port}" if port is not None else "")


def _shown(url: str) -> str:
    # A refused URL is quoted in messages, which reach logs and notifications when the worker refuses a stored
    # one: user info, a query and a fragment, where credentials could sit, are masked.
    head = re.split(r"[?#]", url, maxsplit=1)[0]
    return repr(re.sub(r"//[^/]*@", "//***@", head)[:200] + ("..." if head != url else ""))


def _one_line(what: str, value: str) -> str:
    if not value or value != value.strip() or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConnectionRefused(f"invalid {what}: it must be non-empty, without spaces or control characters")
    return value


def _checked_ref(make: Callable[[str], str], where: str, what: str, settings: SecretSettings) -> str:
    try:
        ref = make(where)
        read_secret(ref, settings)  # read to prove it is there and allowed; the value is dropped at once
    except SecretUnavailable as exc:
        raise ConnectionRefused(f"{what}: {exc}") from None
    return ref


def _client_secret_ref(secret_file: str | None, secret_env: str | None, settings: SecretSettings) -> str | None:
    if secret_file is not None and secret_env is not None:
        raise ConnectionRefused("give the client secret either as a file or as an environment variable, not both")
    if secret_file is not None:
        return _checked_ref(file_ref, secret_file, "client secret", settings)
    if secret_env is not None:
        return _checked_ref(env_ref, secret_env, "client secret", settings)
    return None


def _grant(secret_ref: str | None, private_key_file: str | None, username: str | None,
           refresh_token_file: str | None) -> GrantType:
    usage = ("use --client-secret-file/--client-secret-env (client credentials), "
             "--private-key-file with --username (JWT bearer), "
             "or --refresh-token-file with an optional client secret (refresh token)")
    if private_key_file is not None and refresh_token_file is not None:
        raise ConnectionRefused(f"a private key and a refresh token are two different grants: {usage}")
    if private_key_file is not None or username is not None:
        if private_key_file is None or username is None:
            raise ConnectionRefused(f"the JWT bearer grant needs both a private key file and a username: {usage}")
        if secret_ref is not None:
            raise ConnectionRefused(f"the JWT bearer grant takes no client secret: {usage}")
        return "jwt_bearer"
    if refresh_token_file is not None:
        return "refresh_token"
    if secret_ref is not None:
        return "client_credentials"
    raise ConnectionRefused(f"no credentials given: {usage}")


def _check_private_key(ref: str, settings: SecretSettings) -> None:
    try:
        load_pem_private_key(read_secret(ref, settings).encode(), password=None)
    except (ValueError, TypeError, SecretUnavailable):
        # The parser's own message is dropped: we never risk echoing key material.
        raise ConnectionRefused(f"private key: {ref.removeprefix('file:')} is not an unencrypted PEM private key") \
            from None


def _ca_bundle(path: str) -> str:
    # Certificates are public and nothing of the file is ever sent: a CA bundle may live anywhere.
    absolute = os.path.abspath(os.path.expanduser(path)) if path else ""
    if not os.path.isfile(absolute) or not os.access(absolute, os.R_OK):
        raise ConnectionRefused(f"CA bundle: {absolute or 'empty path'} does not exist or is not a readable file")
    return absolute
