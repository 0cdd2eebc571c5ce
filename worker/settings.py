"""Every environment variable crmsync reads, documented and validated in one place.

=====================================  ==============================================================  ==========
variable                               meaning                                                         default
=====================================  ==============================================================  ==========
``REDIS_URL``                          Redis for quotas, state and the broker (``redis://``,           local 6379
                                       ``rediss://``, ``unix://``; ACL user and password in the URL).
                                       A Redis Cluster: ``redis+cluster://[user:pass@]host:port[,host:
                                       port...]/`` or ``rediss+cluster://`` (seeds; the broker then
                                       needs its own ``BROKER_URL``). A URL that does not match the
                                       server (cluster or not, slots unserved) stops every command at
                                       start: one line, exit 2 (``quota.connection``)
``BROKER_URL``                         the Dramatiq broker: ``amqp://``, ``amqps://`` (RabbitMQ),      REDIS_URL
                                       ``redis://``, ``rediss://``, ``unix://`` (one Redis node)
``CRMSYNC_ACTOR``                      who ``crmsync quota set`` records in the audit trail            login name
``CRMSYNC_DATA_DIR``                   where the default sink writes pulled records                    var/data
``CRMSYNC_LOG_FORMAT``                 ``json`` or ``console``                                         by terminal
``CRMSYNC_RETRY_ATTEMPTS``             attempts at a transient Salesforce fault, each charged          5
``CRMSYNC_RETRY_INITIAL_WAIT``         first backoff, seconds                                          0.5
``CRMSYNC_RETRY_MAX_WAIT``             longest backoff, seconds                                        20
``CRMSYNC_JOB_SLICE_SECONDS``          a job past this stops at its next checkpoint, sent again        300
``CRMSYNC_REQUEST_TIMEOUT``            seconds a Salesforce request may take (connect: at most 10)     130
``CRMSYNC_BULK``                       ``auto`` (the API that costs fewer credits), ``never``, ``always``  auto
``CRMSYNC_BULK_POLL_SECONDS``          first wait before polling a Bulk job; later ones grow to 30x    2
``CRMSYNC_QUOTA_WARNING_SHARES``       shares of the limit that raise ``quota_warning``                0.8,0.95
``CRMSYNC_ORG_PAUSE_SHARE``            pause when the org's own usage reaches this share of its max    0.9
``CRMSYNC_ORG_RESUME_SHARE``           resume a paused org below this share                            0.75
``CRMSYNC_ORG_PROBE_SECONDS``          how often a paused org is probed                                300
``CRMSYNC_BROKER_HEARTBEAT_TIMEOUT``   seconds a worker may be silent before its messages move on      60
``CRMSYNC_BROKER_MAINTENANCE_CHANCE``  per million broker calls, how often one re-queues dead          10000
                                       workers' messages (Dramatiq's 1,000 leaves them for minutes)
``CRMSYNC_METRICS_OBJECTS``            extra object names for the ``object`` metric label              none
``CRMSYNC_SECRET_DIRS``                directories secret files must resolve into, colon-separated     /run/secrets
``CRMSYNC_LOGIN_HOSTS``                login hosts allowed besides Salesforce's: ``host`` (any port)   none
                                       or ``host:port``, comma-separated
``PROMETHEUS_MULTIPROC_DIR``           where worker processes keep their metrics                       unset: off
=====================================  ==============================================================  ==========

A malformed value is refused with a ``ValueError`` naming the variable, at start, rather than misread later.
This module imports nothing heavy: every ``crmsync`` command reads it.
"""

from __future__ import annotations

import getpass
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from quota.urls import CLUSTER_SCHEMES, is_cluster_url, redact_url, scheme

__all__ = [
    "BROKER_SCHEMES",
    "DEFAULT_REDIS_URL",
    "DEFAULT_SECRET_DIRS",
    "MULTIPROC_ENV",
    "BrokerSettings",
    "SecretSettings",
    "WorkerSettings",
    "actor",
    "configured_redis_url",
    "log_format",
    "metrics_objects",
    "multiproc_dir",
    "positive_setting",
    "redis_url",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SECRET_DIRS = "/run/secrets"  # noqa: S105 (a directory, not a password)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LOG_FORMATS = ("json", "console")
_BULK_MODES = ("auto", "never", "always")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def configured_redis_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``REDIS_URL`` when it is set: ``make run`` and the tests start their own Redis when it is not."""
    return _env(environ).get("REDIS_URL") or None


def redis_url(environ: Mapping[str, str] | None = None) -> str:
    """``REDIS_URL`` (one node: redis://, rediss://, unix://; a cluster: redis+cluster://, rediss+cluster://; ACL
    user and password in the URL), else the local default."""
    return configured_redis_url(environ) or DEFAULT_REDIS_URL


def actor(environ: Mapping[str, str] | None = None) -> str:
    """Who an admin command records in the audit trail: ``CRMSYNC_ACTOR``, else the login name."""
    return _env(environ).get("CRMSYNC_ACTOR") or getpass.getuser()


def _choice(name: str, default: str, choices: tuple[str, ...], environ: Mapping[str, str] | None) -> str:
    raw = _env(environ).get(name)
    if raw and raw not in choices:
        raise ValueError(f"{name}={raw!r}: expected {' or '.join(choices)}")
    return raw or default


def log_format(environ: Mapping[str, str] | None = None) -> str | None:
    """``CRMSYNC_LOG_FORMAT`` (``json`` or ``console``), or ``None`` to decide by the terminal."""
    return _choice("CRMSYNC_LOG_FORMAT", "", _LOG_FORMATS, environ) or None


def multiproc_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The worker pool's metrics directory from ``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when it is unset."""
    env = _env(environ)
    value = env.get(MULTIPROC_ENV) or env.get(MULTIPROC_ENV.lower())  # prometheus-client still reads the old name
    return Path(value) if value else None


def metrics_objects(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``CRMSYNC_METRICS_OBJECTS``: comma-separated object names that get their own ``object`` label."""
    raw = _env(environ).get("CRMSYNC_METRICS_OBJECTS", "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _number(name: str, default: float, environ: Mapping[str, str] | None, accept: Callable[[float], bool],
            expected: str) -> float:
    raw = _env(environ).get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = math.nan  # accepted by no range
    if not accept(value):
        raise ValueError(f"{name}={raw!r}: expected {expected}, such as {default:g}")
    return value


def positive_setting(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """The environment variable ``name`` as a finite number above 0, or ``default`` when it is unset or empty;
    anything else is refused with a message naming the variable."""
    return _number(name, default, environ, lambda v: 0 < v < math.inf, "a number above 0")


def _whole_setting(name: str, default: int, environ: Mapping[str, str] | None) -> int:
    value = positive_setting(name, default, environ)
    if value != int(value):
        raise ValueError(f"{name}={value:g}: expected a whole number, such as {default}")
    return int(value)


def _share(name: str, default: float, environ: Mapping[str, str] | None) -> float:
    return _number(name, default, environ, lambda v: 0 < v <= 1, "a share between 0 and 1")


def _shares(name: str, default: tuple[float, ...], environ: Mapping[str, str] | None) -> tuple[float, ...]:
    raw = _env(environ).get(name)
    if not raw:
        return default
    try:
        values = tuple(sorted(float(s) for s in raw.split(",")))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values):
        raise ValueError(f"{name}={raw!r}: expected shares such as 0.8,0.95")
    return values


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process reads from the environment (see the module's table for each variable)."""

    data_dir: Path = Path("var/data")
    quota_warning_shares: tuple[float, ...] = (0.8, 0.95)
    org_pause_share: float = 0.9
    org_resume_share: float = 0.75
    org_probe_seconds: float = 300.0
    # Salesforce itself ends a query at 120 s; past this a request is abandoned and retried.
    request_timeout: float = 130.0
    # Half Dramatiq's 10-minute time limit, which would interrupt a job anywhere.
    job_slice_seconds: float = 300.0
    retry_attempts: int = 5
    retry_initial_wait: float = 0.5
    retry_max_wait: float = 20.0
    bulk: str = "auto"
    bulk_poll_seconds: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Read the settings, refusing malformed values with a message naming the variable."""
        env = _env(environ)
        pause = _share("CRMSYNC_ORG_PAUSE_SHARE", cls.org_pause_share, env)
        resume = _share("CRMSYNC_ORG_RESUME_SHARE", cls.org_resume_share, env)
        if resume >= pause:
            raise ValueError("CRMSYNC_ORG_RESUME_SHARE must be below CRMSYNC_ORG_PAUSE_SHARE")
        return cls(
            data_dir=Path(env.get("CRMSYNC_DATA_DIR") or cls.data_dir),
            quota_warning_shares=_shares("CRMSYNC_QUOTA_WARNING_SHARES", cls.quota_warning_shares, env),
            org_pause_share=pause,
            org_resume_share=resume,
            org_probe_seconds=positive_setting("CRMSYNC_ORG_PROBE_SECONDS", cls.org_probe_seconds, env),
            request_timeout=positive_setting("CRMSYNC_REQUEST_TIMEOUT", cls.request_timeout, env),
            job_slice_seconds=positive_setting("CRMSYNC_JOB_SLICE_SECONDS", cls.job_slice_seconds, env),
            retry_attempts=_whole_setting("CRMSYNC_RETRY_ATTEMPTS", cls.retry_attempts, env),
            retry_initial_wait=positive_setting("CRMSYNC_RETRY_INITIAL_WAIT", cls.retry_initial_wait, env),
            retry_max_wait=positive_setting("CRMSYNC_RETRY_MAX_WAIT", cls.retry_max_wait, env),
            bulk=_choice("CRMSYNC_BULK", cls.bulk, _BULK_MODES, env),
            bulk_poll_seconds=positive_setting("CRMSYNC_BULK_POLL_SECONDS", cls.bulk_poll_seconds, env),
        )


BROKER_SCHEMES = {"redis": "redis", "rediss": "redis", "unix": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq"}


@dataclass(frozen=True)
class BrokerSettings:
    """The Dramatiq broker's settings: where it is (``kind`` ``redis`` or ``rabbitmq``) and, on Redis, how fast a
    dead worker's messages move on (RabbitMQ hands them on when the worker's connection drops)."""

    url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # it may hold a password
    heartbeat_timeout_s: float = 60.0
    maintenance_chance: int = 10_000

    @property
    def kind(self) -> str:
        """``rabbitmq`` for an ``amqp://`` or ``amqps://`` URL, else ``redis``."""
        return BROKER_SCHEMES.get(scheme(self.url), "redis")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerSettings:
        """Read the settings, refusing malformed values with a message naming the variable (never a password).

        ``BROKER_URL`` unset: Dramatiq's Redis broker on ``REDIS_URL``. A Redis Cluster URL (``redis+cluster://``,
        ``rediss+cluster://``) is refused either way: Dramatiq's Redis broker cannot run on a cluster."""
        chance = positive_setting("CRMSYNC_BROKER_MAINTENANCE_CHANCE", cls.maintenance_chance, environ)
        url = _env(environ).get("BROKER_URL") or ""
        if url:
            kind = scheme(url)
            if kind in CLUSTER_SCHEMES:
                raise ValueError(f"BROKER_URL={redact_url(url)}: names a Redis Cluster, and Dramatiq's Redis broker "
                                 "cannot run on a cluster: use RabbitMQ (amqp://) or one Redis node (redis://)")
            if kind not in BROKER_SCHEMES:
                raise ValueError(f"BROKER_URL={redact_url(url)}: expected an amqp://, amqps://, redis://, "
                                 "rediss:// or unix:// URL")
        else:
            url = redis_url(environ)
            if is_cluster_url(url):
                raise ValueError("REDIS_URL names a Redis Cluster and BROKER_URL is unset: Dramatiq's Redis broker "
                                 "cannot run on a cluster; set BROKER_URL to RabbitMQ (amqp://...) or one Redis "
                                 "node (redis://...)")
        return cls(
            url=url,
            heartbeat_timeout_s=positive_setting("CRMSYNC_BROKER_HEARTBEAT_TIMEOUT", cls.heartbeat_timeout_s, environ),
            maintenance_chance=int(min(chance, 1_000_000)),
        )


# A login host as CRMSYNC_LOGIN_HOSTS lists it: a lower-case DNS name or an IP address, and a port (None: any).
LoginHost = tuple[str, int | None]
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def _secret_dirs(raw: str) -> tuple[Path, ...]:
    dirs = tuple(Path(entry) for entry in raw.split(":") if entry)
    for directory in dirs:
        if not directory.is_absolute() or os.path.normpath(directory) == "/":
            # The root would let a reference name any file on the host (/proc/self/environ): the very thing to stop.
            raise ValueError(f"CRMSYNC_SECRET_DIRS={raw!r}: expected absolute directories other than /, "
                             f"separated by ':', such as {DEFAULT_SECRET_DIRS}")
    return dirs


def _login_host(entry: str, raw: str) -> LoginHost:
    try:
        parts = urlsplit(f"//{entry}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number from 0 to 65535
        host, port = None, None
    if host is None or parts.netloc != entry or parts.username is not None \
            or not (_HOST_NAME.fullmatch(host) or _is_ip(host)):
        raise ValueError(f"CRMSYNC_LOGIN_HOSTS={raw!r}: {entry!r} is not a host or host:port, "
                         "such as login.example.com or 127.0.0.1:8443")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class SecretSettings:
    """Where a connection's secrets may be read from and sent to (see the module's table for each variable)."""

    secret_dirs: tuple[Path, ...] = (Path(DEFAULT_SECRET_DIRS),)
    login_hosts: tuple[LoginHost, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretSettings:
        """Read the settings, refusing malformed values with a message naming the variable."""
        env = _env(environ)
        hosts = env.get("CRMSYNC_LOGIN_HOSTS", "")
        return cls(
            secret_dirs=_secret_dirs(env.get("CRMSYNC_SECRET_DIRS", "")) or cls.secret_dirs,
            login_hosts=tuple(_login_host(entry.strip(), hosts) for entry in hosts.split(",") if entry.strip()),
        )
