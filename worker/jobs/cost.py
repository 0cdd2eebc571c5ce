"""What a job costs in API credits on each path, and which path to take.

Every request Salesforce counts is one credit: a REST query page (up to 2,000 records; 200 when two or more long
text fields are selected) or an sObject
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
# 100,000 records of a dozen fields is some tens of MB, which a worker holds in memory.
BULK_RESULTS_PAGE = 100_000
# Salesforce takes up to 150 MB per upload once base64-encoded, about 100 MB of CSV (simple-salesforce's
# bound); a push whose CSV is larger goes by REST rather than by several jobs.
BULK_UPLOAD_BYTES = 100_000_000
# A cautious guess of Salesforce's Bulk throughput, to estimate how long a job runs and so how many polls
# it costs. A job that runs longer only costs more polls, which the backoff keeps few.
ASSUMED_RECORDS_PER_SECOND = 2_000.0
_POLL_STEPS = (1, 4, 10, 15)
_POLL_MAX_STEP = 30


@dataclass(frozen=True)
class PollSchedule:
    """Waits before each status poll of a Bulk job: ``first`` times 1, 4, 10 and 15, then 30 apart.

    With ``first`` at 2 s (``CRMSYNC_BULK_POLL_SECONDS``) the polls fall at 2, 10, 30 and 60 s: a job that
    finishes within a minute costs at most 4 polls, and a long one one poll a minute.
    """

    first: float = 2.0

    def wait(self, poll: int) -> float:
        """Seconds to wait before poll number ``poll`` (0-based)."""
        return self.first * (_POLL_STEPS[poll] if poll < len(_POLL_STEPS) else _POLL_MAX_STEP)

    def polls_for(self, seconds: float) -> int:
        """How many polls it takes to see a job that finishes ``seconds`` after it starts (at least 1)."""
        polls, elapsed = 1, self.wait(0)
        while elapsed < seconds:
            elapsed += self.wait(polls)
            polls += 1
        return polls


def rest_pull_cost(records: int, *, page_size: int = REST_PAGE) -> int:
    """Credits to read ``records`` by REST query pages of ``page_size`` (an empty read is one request too).

    Salesforce returns "up to" the batch size and may return fewer, and "if the SOQL statement selects two or
    more custom fields of type long text, the batch size can't be greater than 200 records" (Change the Batch
    Size in Queries, SOQL and SOSL Reference; see docs/emulator.md). A pull therefore passes the size of its
    first page once Salesforce has chosen it: 200 for such a query, so its estimate is ten times 2,000's."""
    return max(1, math.ceil(records / max(1, min(page_size, REST_PAGE))))


def _expected_polls(records: int) -> int:
    # Salesforce's clock, not a test's: the default schedule against the assumed throughput.
    return PollSchedule().polls_for(records / ASSUMED_RECORDS_PER_SECOND)


def bulk_pull_cost(records: int) -> int:
    """Credits to read ``records`` with a Bulk query job: create, the polls, the results pages."""
    polls = _expected_polls(records)
    return 1 + polls + max(1, math.ceil(records / BULK_RESULTS_PAGE))


def rest_push_cost(records: int) -> int:
    """Credits to upsert ``records`` through sObject Collections."""
    return math.ceil(records / REST_COLLECTION)


def bulk_push_cost(records: int) -> int:
    """Credits to upsert ``records`` with a Bulk ingest job: create, one upload, close, the polls, and one
    request for the failed records (made only when some failed, counted here to stay on the safe side)."""
    return 1 + 1 + 1 + _expected_polls(records) + 1


def choose(mode: BulkMode, rest: int, bulk: int, *, bulk_available: bool = True) -> Path:
    """REST or Bulk for a job that costs ``rest`` or ``bulk`` credits. ``never`` and ``always`` are the
    operator's word; ``auto`` takes Bulk only when it is cheaper. Without bulk budget left it is REST."""
    if not bulk_available or mode == "never":
        return "rest"
    if mode == "always":
        return "bulk"
    return "bulk" if bulk < rest else "rest"
