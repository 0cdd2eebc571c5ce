"""crmsync's state modules' own tests, run unchanged on the Redis Cluster (``redis_client`` is the cluster
here, see ``conftest.py``): pause, park and resume; job state through the actors (on a stubbed broker);
connections (the WATCHed production rule, racing); notifications (raised once across processes, listed) and
their delivery ledger (copies racing for an attempt)."""

from __future__ import annotations

from tests.notifications.conftest import hook_server  # noqa: F401  (a fixture the ledger tests use)
from tests.notifications.test_center import *  # noqa: F403
from tests.notifications.test_ledger import *  # noqa: F403
from tests.worker.test_connections import *  # noqa: F403
from tests.worker.test_lifecycle import *  # noqa: F403
from tests.worker.test_parking import *  # noqa: F403
from tests.worker.test_resume import *  # noqa: F403

