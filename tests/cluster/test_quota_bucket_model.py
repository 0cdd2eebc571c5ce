"""``tests/quota/test_bucket_model.py``, run unchanged on the Redis Cluster (``redis_client`` and ``redis_url`` are the
cluster's here, see ``conftest.py``)."""

from __future__ import annotations

from tests.quota.test_bucket_model import *  # noqa: F403
