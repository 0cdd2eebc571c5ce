"""Nothing is wired at import: modules declaring actors install no broker; the worker app does, with its actors
and middleware; and a plain process sends jobs by actor name without importing their code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from worker.broker import NAMESPACE
from worker.enqueue import PULL_ACTOR, QUEUE
from worker.jobs.parking import ParkedJob
from worker.jobs.resume import send_parked

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_actors_and_senders_installs_no_broker() -> None:
    out = _python(
        "import dramatiq.broker, worker.jobs.actors, worker.notifications.delivery, worker.enqueue, "
        "worker.jobs.resume, worker.notifications\n"
        "print(dramatiq.broker.global_broker is None)"
    )
    assert out.strip() == "True"


def test_the_worker_app_installs_its_broker_with_actors_and_middleware() -> None:
    out = _python(
        "import json, dramatiq, worker.app as app\n"
        "print(json.dumps({'installed': dramatiq.get_broker() is app.broker, 'actors': sorted(app.broker.actors),\n"
        "                  'middleware': [type(m).__name__ for m in app.broker.middleware]}))"
    )
    wired = json.loads(out)
    assert wired["installed"]
    assert wired["actors"] == ["crmsync_deliver_notification", "crmsync_pull", "crmsync_push"]
    assert {"CurrentMessage", "ResumerMiddleware", "JobMetrics", "Retries"} <= set(wired["middleware"])


def test_a_parked_job_is_sent_back_by_actor_name(redis_client: redis.Redis) -> None:
    # What `crmsync resume` does: this process never declared the actor.
    kwargs = {"tenant": "acme", "sobject": "Lead", "job_id": "j1", "seq": 3}
    send_parked(ParkedJob(PULL_ACTOR, kwargs), 0)
    [body] = redis_client.hvals(f"{NAMESPACE}:{QUEUE}.msgs")
    message = json.loads(body)
    assert (message["actor_name"], message["queue_name"], message["kwargs"]) == (PULL_ACTOR, QUEUE, kwargs)
