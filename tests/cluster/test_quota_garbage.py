"""``tests/quota/test_garbage.py``, run unchanged on the Redis Cluster (``redis_client`` and ``redis_url`` are the
cluster's here, see ``conftest.py``)."""

from __future__ import annotations

from tests.quota.test_garbage import *  # noqa: F403
