"""tests/e2e's jobs and pause-and-resume stories with real worker processes whose ``REDIS_URL`` is the Redis
Cluster and whose broker (``BROKER_URL``) is a separate single Redis node: every job's credits equal the
emulator's count of the tenant's requests, pauses park and resume (see ``conftest.py`` for the wiring)."""

from __future__ import annotations

from tests.e2e.conftest import emulator, workers  # noqa: F401  (fixtures; worker_env and make_tenant: conftest.py)
from tests.e2e.test_pause_resume import *  # noqa: F403
from tests.e2e.test_worker_jobs import *  # noqa: F403
