"""What a job costs in API credits on each path, and which path to take.

Every request Salesforce counts is one credit: a REST query page (up to 2,000 records) or an sObject
Collections upsert (up to 200), and every Bulk API 2.0 request: creating the job, each upload, closing it,
**each status poll** and each results page. So Bulk pays a fixed overhead and then moves records by the tens
of thousands per request; REST pays per page. The choice compares the two counts for the job's size, polls
included, and takes REST unless Bulk costs fewer credits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BULK_RESULTS_PAGE",
    "BULK_UPLOAD_BYTES",
    "REST_COLLECTION",
    "REST_PAGE",
    "BulkMode",
    "Path",
    "PollSchedule",
    "bulk_pull_cost",
    "bulk_push_cost",
    "choose",
    "rest_pull_cost",
    "rest_push_cost",
]

BulkMode = Literal["auto", "never", "always"]
Path = Literal["rest", "bulk"]

REST_PAGE = 2_000  # records in a REST query page (Salesforce's default and largest batch)
REST_COLLECTION = 200  # records in one sObject Collections upsert
# Records we ask for per Bulk results page (maxRecords): large pages are fewer credits, and a page of
# 50,000 narrow records is a few MB, well inside what a worker holds in memory.
BULK_RESULTS_PAGE = 50_000
# Salesforce takes up to 150 MB per upload once base64-encoded, about 100 MB of CSV (simple-salesforce's bound).
BULK_UPLOAD_BYTES = 100_000_000
# A cautious guess of Salesforce's Bulk throughput, to estimate how long a job runs and so how many polls
# it costs. A job that runs longer only costs more polls, which the backoff keeps few.
ASSUMED_RECORDS_PER_SECOND = 2_000.0


@dataclass(frozen=True)
class PollSchedule:
    """Waits before each status poll of a Bulk job: growing, then ``max_wait`` apart.

    With the defaults the polls fall at 2, 10, 30 and 60 s: a job that finishes within a minute costs at most
    4 polls, and a long one about one poll a minute.
    """

    waits: tuple[float, ...] = (2.0, 8.0, 20.0, 30.0)
    max_wait: float = 60.0

    def wait(self, poll: int) -> float:
        """Seconds to wait before poll number ``poll`` (0-based)."""
        return self.waits[poll] if poll < len(self.waits) else self.max_wait

    def polls_for(self, seconds: float) -> int:
        """How many polls it takes to see a job that finishes ``seconds`` after it starts (at least 1)."""
        polls, elapsed = 1, self.wait(0)
        while elapsed < seconds:
            elapsed += self.wait(polls)
            polls += 1
        return polls


def rest_pull_cost(records: int) -> int:
    """Credits to read ``records`` by REST query pages (an empty read is one request too)."""
    return max(1, math.ceil(records / REST_PAGE))


def bulk_pull_cost(records: int, schedule: PollSchedule) -> int:
    """Credits to read ``records`` with a Bulk query job: create, the polls, the results pages."""
    polls = schedule.polls_for(records / ASSUMED_RECORDS_PER_SECOND)
    return 1 + polls + max(1, math.ceil(records / BULK_RESULTS_PAGE))


def rest_push_cost(records: int) -> int:
    """Credits to upsert ``records`` through sObject Collections."""
    return math.ceil(records / REST_COLLECTION)


def bulk_push_cost(records: int, csv_bytes: int, schedule: PollSchedule) -> int:
    """Credits to upsert ``records`` with a Bulk ingest job: create, the uploads, close, the polls, and one
    request for the failed records (made only when some failed, counted here to stay on the safe side)."""
    polls = schedule.polls_for(records / ASSUMED_RECORDS_PER_SECOND)
    return 1 + max(1, math.ceil(csv_bytes / BULK_UPLOAD_BYTES)) + 1 + polls + 1


def choose(mode: BulkMode, rest: int, bulk: int, *, bulk_available: bool = True) -> Path:
    """REST or Bulk for a job that costs ``rest`` or ``bulk`` credits. ``never`` and ``always`` are the
    operator's word; ``auto`` takes Bulk only when it is cheaper. Without bulk budget left it is REST."""
    if not bulk_available or mode == "never":
        return "rest"
    if mode == "always":
        return "bulk"
    return "bulk" if bulk < rest else "rest"
