"""Redis and broker URLs as crmsync reads and shows them: their scheme, whether one names a Redis Cluster, and
the URL with its password hidden. No client library is imported here: ``worker.settings`` (which every
``crmsync`` command imports) and ``quota.connection`` share it.
"""

from __future__ import annotations

__all__ = ["CLUSTER_SCHEMES", "is_cluster_url", "redact_url", "scheme"]

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Each Redis Cluster URL scheme and the single-node scheme redis-py parses its seeds with."""


def scheme(url: str) -> str:
    """``url``'s scheme in lower case (``""`` when it has none)."""
    return url.partition("://")[0].lower() if "://" in url else ""


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return scheme(url) in CLUSTER_SCHEMES


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs; several URLs separated by ``;`` (a
    RabbitMQ cluster's nodes) each. A user given alone is hidden too: some clients read it as the password."""
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo or not user else f"***@{host}"
    return f"{head}{sep}{netloc}{slash}{tail}"
