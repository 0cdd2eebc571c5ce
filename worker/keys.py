"""Every Redis key crmsync uses, in one place: the worker's own, and the credit bucket's (from ``quota.keys``).

A tenant's keys all carry the hash tag ``{tenant}``, so each tenant lives in one Redis Cluster slot and a
script may touch several of them. Cross-tenant indexes (the tenant registry, the paused set, the schedules)
carry no tag and are only touched outside tenant scripts.

=====================================  ======  ==============================================================
key                                    type    what
=====================================  ======  ==============================================================
``crmsync:tenants``                    set     every tenant id that has quota config
``crmsync:connections``                set     every tenant id that has a Salesforce connection
``crmsync:{T}:conn``                   hash    the tenant's connection (secrets only as references)
``crmsync:{T}:config``                 hash    ``limit``, ``reset_at`` (HH:MM UTC), ``reset_from``,
                                               ``reserve``, ``window`` (``daily`` or ``rolling``)
``crmsync:{T}:w:<END>``                int     daily mode: credits used in the window ending at epoch second
                                               ``END``; expires shortly after ``END``
``crmsync:{T}:w:rolling``              hash    rolling mode: credits used per hour of the last 25; expires
                                               shortly after its newest credits come back
``crmsync:{T}:audit``                  list    JSON audit entries, newest first, trimmed to a bound
``crmsync:{T}:org``                    hash    Salesforce's own usage from ``Sforce-Limit-Info``: used, max, at
``crmsync:{T}:bulk``                   hash    the org's Bulk API budgets last read from ``/limits``, and when
``crmsync:{T}:pull:<OBJECT>``          hash    pull checkpoint: watermark, ids at the watermark, next page
``crmsync:{T}:push:<JOB>``             string  records a queued push job will upsert (JSON), with its position
``crmsync:{T}:job:<JOB>``              hash    a job's state and outcome, for ``--wait`` and status; expires
``crmsync:{T}:lock:<OBJECT>``          string  one running job per tenant and object; expires
``crmsync:{T}:active``                 hash    object -> id of its pull that is queued, running or parked
``crmsync:{T}:seq``                    int     enqueue sequence: parked jobs keep their original order by it
``crmsync:{T}:pause``                  hash    why the tenant is paused: reason, since, detail, scope
``crmsync:{T}:parked``                 zset    parked normal jobs (JSON), scored by enqueue sequence
``crmsync:{T}:parked:essential``       zset    parked essential jobs (JSON), scored by enqueue sequence
``crmsync:{T}:resuming``               string  lock held while a tenant's parked jobs are re-queued; expires
``crmsync:{T}:notified:<KIND>:<W>``    string  a notification of KIND was raised in window W; expires
``crmsync:{T}:delivery:<N>:<TARGET>``  hash    notification N's delivery to TARGET (``webhook:<ID>``,
                                               ``email``): state, attempts, when next; expires
``crmsync:paused``                     set     every paused tenant
``crmsync:notifications``              stream  recent notifications, all tenants, bounded
``crmsync:notify:config``              hash    notification channels (webhooks, SMTP); secrets as references
``crmsync:schedules``                  hash    "TENANT/OBJECT" -> pull interval in seconds
``crmsync:schedule:priority``          hash    "TENANT/OBJECT" -> its pulls' priority (absent: normal)
``crmsync:schedule:due``               zset    "TENANT/OBJECT" scored by when its next pull is due (while a
                                               scheduler queues it: when that claim's hold ends)
``crmsync:scheduler:lease``            string  the scheduler instance allowed to enqueue; expires
``crmsync:resumer:lease``              string  the worker process that checks paused tenants; expires
=====================================  ======  ==============================================================

``<OBJECT>`` in the checkpoint and lock keys, and the ``active`` hash's fields, are the object's
``worker.salesforce.soql.object_key`` (``Lead`` for ``LEAD``, ``my_thing__c`` for ``My_Thing__c``), so an object
spelled two ways has one checkpoint, one lock and one active pull.
"""

from __future__ import annotations

from quota.keys import PREFIX, TENANTS, audit, config, daily_counter, rolling_window, scope, window_prefix
from worker.salesforce.soql import object_key

__all__ = [
    "CONNECTIONS",
    "NOTIFICATIONS",
    "NOTIFY_CONFIG",
    "PAUSED",
    "PREFIX",
    "RESUMER_LEASE",
    "SCHEDULER_LEASE",
    "SCHEDULES",
    "SCHEDULE_DUE",
    "SCHEDULE_PRIORITY",
    "TENANTS",
    "active_pulls",
    "audit",
    "bulk_budget",
    "config",
    "connection",
    "daily_counter",
    "delivery",
    "job",
    "legacy_pull_checkpoint",
    "lock",
    "notified",
    "org_usage",
    "parked",
    "parked_essential",
    "pause",
    "pull_checkpoint",
    "push_records",
    "resuming",
    "rolling_window",
    "scope",
    "sequence",
    "window_prefix",
]

CONNECTIONS = f"{PREFIX}connections"
PAUSED = f"{PREFIX}paused"
NOTIFICATIONS = f"{PREFIX}notifications"
NOTIFY_CONFIG = f"{PREFIX}notify:config"
SCHEDULES = f"{PREFIX}schedules"
SCHEDULE_DUE = f"{PREFIX}schedule:due"
SCHEDULE_PRIORITY = f"{PREFIX}schedule:priority"
SCHEDULER_LEASE = f"{PREFIX}scheduler:lease"
RESUMER_LEASE = f"{PREFIX}resumer:lease"


def connection(tenant: str) -> str:
    """Hash of a tenant's connection to its Salesforce org."""
    return f"{scope(tenant)}:conn"


def org_usage(tenant: str) -> str:
    """Hash of the org usage Salesforce last reported for a tenant (``Sforce-Limit-Info``)."""
    return f"{scope(tenant)}:org"


def bulk_budget(tenant: str) -> str:
    """Hash of the org's Bulk API budgets (remaining and max of each) as last read from ``/limits``."""
    return f"{scope(tenant)}:bulk"


def pull_checkpoint(tenant: str, sobject: str) -> str:
    """Hash of a tenant's incremental-pull checkpoint for one object, however the object is spelled."""
    return f"{scope(tenant)}:pull:{object_key(sobject)}"


def legacy_pull_checkpoint(tenant: str, sobject: str) -> str:
    """Where a checkpoint was kept before object names were matched: under the object as the job spelled it
    (``worker.jobs.state.adopt_legacy_checkpoint`` moves it to ``pull_checkpoint``)."""
    return f"{scope(tenant)}:pull:{sobject}"


def push_records(tenant: str, job_id: str) -> str:
    """Hash holding a queued push job's records and how far it got."""
    return f"{scope(tenant)}:push:{job_id}"


def job(tenant: str, job_id: str) -> str:
    """Hash of one job's state and outcome."""
    return f"{scope(tenant)}:job:{job_id}"


def lock(tenant: str, sobject: str) -> str:
    """Lock held by the one job running for a tenant and object, however the object is spelled."""
    return f"{scope(tenant)}:lock:{object_key(sobject)}"


def active_pulls(tenant: str) -> str:
    """Hash of object -> id of the tenant's pull that is queued, running or parked (one at a time)."""
    return f"{scope(tenant)}:active"


def sequence(tenant: str) -> str:
    """Counter giving each queued job of a tenant its place in line."""
    return f"{scope(tenant)}:seq"


def pause(tenant: str) -> str:
    """Hash saying why and since when a tenant is paused."""
    return f"{scope(tenant)}:pause"


def parked(tenant: str) -> str:
    """Sorted set of a paused tenant's parked normal jobs, in their original order."""
    return f"{scope(tenant)}:parked"


def parked_essential(tenant: str) -> str:
    """Sorted set of a paused tenant's parked essential jobs, apart so the resumer finds them without a scan."""
    return f"{scope(tenant)}:parked:essential"


def notified(tenant: str, kind: str, window: str) -> str:
    """Marker that a notification of ``kind`` was raised for ``tenant`` in ``window``."""
    return f"{scope(tenant)}:notified:{kind}:{window}"


def delivery(tenant: str, notification_id: str, target: str) -> str:
    """Hash of one notification's delivery to one slow channel (``webhook:<ID>`` or ``email``)."""
    return f"{scope(tenant)}:delivery:{notification_id}:{target}"


def resuming(tenant: str) -> str:
    """Lock held while a tenant's parked jobs are put back in the queue."""
    return f"{scope(tenant)}:resuming"
