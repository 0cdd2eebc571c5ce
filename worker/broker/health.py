"""Is the broker there, and does it let us in? Checked once when a worker pool or a scheduler starts.

``check_broker`` opens one connection to the broker of ``BrokerSettings`` with short timeouts: a TCP connect,
the login (RabbitMQ: the user, password and virtual host; Redis: ``PING`` after ``AUTH``) and, on RabbitMQ, a
channel. Any failure raises ``BrokerUnavailable`` with one line naming the broker by its URL with the password
replaced by ``***`` and what went wrong, so ``crmsync worker`` and ``crmsync scheduler`` exit 2 with it instead of
starting processes that cannot get a job or a message out.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
import redis

from quota.urls import redact_url
from worker.broker.rabbitmq import connection_parameters
from worker.errors import BrokerUnavailable, CommandError
from worker.settings import BrokerSettings

__all__ = ["CHECK_TIMEOUT_S", "check_broker", "describe", "describe_error", "require_broker", "scrub"]

CHECK_TIMEOUT_S = 5.0


def check_broker(settings: BrokerSettings, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Connect to the broker once and log in; raise ``BrokerUnavailable`` (one line, no password) if it fails."""
    where = describe(settings)
    try:
        reason = _check_rabbitmq(settings.url, timeout_s) if settings.kind == "rabbitmq" \
            else _check_redis(settings.url, timeout_s)
    except ValueError as exc:  # a URL the client cannot read (a bad port, an unknown option)
        reason = f"bad URL: {exc}"
    if reason is not None:
        raise BrokerUnavailable(scrub(f"{where}: {reason}", settings.url))


def describe(settings: BrokerSettings) -> str:
    """The broker as messages name it: its kind and its URL without the password."""
    return f"{'RabbitMQ' if settings.kind == 'rabbitmq' else 'Redis'} broker {redact_url(settings.url)}"


def require_broker() -> BrokerSettings:
    """For a command that starts workers or a scheduler: the broker's settings, checked and reached once.
    A bad setting or a broker that cannot be reached or refuses the login is a ``CommandError`` (exit 2, one
    line), never a traceback and never a process left running without its broker."""
    try:
        settings = BrokerSettings.from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        check_broker(settings)
    except BrokerUnavailable as exc:
        raise CommandError(str(exc)) from None
    return settings


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` replaced by ``***``: a client library's message may quote it."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _check_rabbitmq(url: str, timeout_s: float) -> str | None:
    try:
        connection = pika.BlockingConnection(connection_parameters(url, timeout_s))
    except pika.exceptions.ProbableAuthenticationError:
        return "login refused (wrong user or password)"
    except pika.exceptions.ProbableAccessDeniedError:
        return "access refused (the user may not use this virtual host)"
    except Exception as exc:  # pika raises some connector errors unwrapped (a handshake timeout)
        return f"unreachable ({describe_error(exc)})"
    try:
        connection.channel().close()
    except pika.exceptions.AMQPError as exc:
        return f"no channel ({describe_error(exc)})"
    finally:
        if connection.is_open:
            connection.close()
    return None


def _check_redis(url: str, timeout_s: float) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.AuthenticationError:
        return "login refused (wrong user or password)"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return f"unreachable ({type(exc).__name__}: {exc})"
    except redis.RedisError as exc:  # NOPERM and the like
        return f"refused ({type(exc).__name__}: {exc})"
    finally:
        client.close()
    return None


def describe_error(exc: BaseException) -> str:
    """The root cause of a broker client's error, in one line (``ConnectionRefusedError: ...``)."""
    # pika wraps the socket error in connection-workflow errors (as the first argument of the next, or their
    # ``exception``): the root cause is what helps.
    while True:
        inner = exc.args[0] if exc.args else getattr(exc, "exception", None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    if "Timeout" in type(exc).__name__ and "handshake" in str(exc):  # pika's text lists the socket's every field
        return f"{type(exc).__name__}: no AMQP handshake in time"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _secrets(url: str) -> list[str]:
    # Each password as written in the URL(s) and as decoded: a client may quote either.
    found: set[str] = set()
    for part in url.split(";"):
        try:
            raw = urlsplit(part).netloc.rpartition("@")[0].partition(":")[2]
        except ValueError:
            continue
        found |= {raw, unquote(raw)}
    return sorted(found - {""}, key=len, reverse=True)
