"""Bulk API 2.0 on the worker's side, pure logic: the credit cost model and the choice it drives, the poll
schedule and its loop, the ingest and query CSV (checked against Python's csv and against the emulator's own
reader, which reads job data the way Salesforce does), and the settings that switch Bulk on."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from simple_salesforce.exceptions import SalesforceResourceNotFound

from emulator.bulk_csv import read_csv, write_csv
from emulator.bulk_jobs import csv_value
from worker.errors import BulkJobLost, SliceEnded
from worker.jobs.bulk import NO_BULK, NULL, BulkOptions, read_records, wait_for_job, write_records
from worker.jobs.cost import (
    BULK_RESULTS_PAGE,
    REST_COLLECTION,
    REST_PAGE,
    PollSchedule,
    bulk_pull_cost,
    bulk_push_cost,
    choose,
    rest_pull_cost,
    rest_push_cost,
)
from worker.jobs.pull import PullCheckpoint, run_pull
from worker.jobs.state import JobStore
from worker.salesforce.bulk import ResultsPage
from worker.salesforce.client import TenantSalesforce
from worker.settings import WorkerSettings

LIMITS_READ = 1  # the /limits read of the Bulk budgets, made before a job first chooses Bulk (at most hourly)


# -- the cost model -------------------------------------------------------------------------------------------


def test_a_100k_record_pull_costs_at_most_8_credits_by_bulk_against_50_by_rest() -> None:
    first_page = 1  # a pull always starts with a REST query page: its totalSize is what the choice is made on
    remaining = 100_000 - REST_PAGE
    by_bulk = first_page + LIMITS_READ + bulk_pull_cost(remaining)
    assert by_bulk <= 8
    assert rest_pull_cost(100_000) == 50
    assert choose("auto", rest_pull_cost(remaining), bulk_pull_cost(remaining)) == "bulk"


def test_a_100k_record_push_costs_at_most_10_credits_by_bulk_against_500_by_rest() -> None:
    assert LIMITS_READ + bulk_push_cost(100_000) <= 10
    assert rest_push_cost(100_000) == 500
    assert choose("auto", rest_push_cost(100_000), bulk_push_cost(100_000)) == "bulk"


def test_small_jobs_stay_on_rest() -> None:
    assert rest_pull_cost(500) == 1
    assert rest_push_cost(500) == 3
    assert bulk_pull_cost(500) > 1
    assert bulk_push_cost(500) > 3
    assert choose("auto", rest_pull_cost(500), bulk_pull_cost(500)) == "rest"
    assert choose("auto", rest_push_cost(500), bulk_push_cost(500)) == "rest"
    assert rest_pull_cost(0) == 1  # an empty read is a request too


def test_bulk_is_chosen_only_when_strictly_cheaper() -> None:
    # Push: create, upload, close, one poll, failedResults = 5 credits against one per 200 records.
    assert (rest_push_cost(1_000), bulk_push_cost(1_000)) == (5, 5)
    assert choose("auto", rest_push_cost(1_000), bulk_push_cost(1_000)) == "rest"
    assert choose("auto", rest_push_cost(1_001), bulk_push_cost(1_001)) == "bulk"
    # Pull (what is left after the first page): create, two polls (4 s at the assumed rate), one results page.
    assert (rest_pull_cost(4 * REST_PAGE), bulk_pull_cost(4 * REST_PAGE)) == (4, 4)
    assert choose("auto", rest_pull_cost(4 * REST_PAGE), bulk_pull_cost(4 * REST_PAGE)) == "rest"
    assert choose("auto", rest_pull_cost(4 * REST_PAGE + 1), bulk_pull_cost(4 * REST_PAGE + 1)) == "bulk"


@pytest.mark.parametrize("records", [1, 999, 1_001, 30_000, 1_000_000])
def test_the_operator_s_word_wins_and_no_budget_means_rest(records: int) -> None:
    rest, bulk = rest_push_cost(records), bulk_push_cost(records)
    assert choose("never", rest, bulk) == "rest"
    assert choose("always", rest, bulk) == "bulk"
    assert choose("always", rest, bulk, bulk_available=False) == "rest"
    assert choose("auto", rest, bulk, bulk_available=False) == "rest"
    assert choose("auto", rest, bulk) == ("bulk" if bulk < rest else "rest")


def test_results_pages_and_collections_are_counted_per_request() -> None:
    assert bulk_pull_cost(BULK_RESULTS_PAGE) < bulk_pull_cost(BULK_RESULTS_PAGE + 1)  # a second results page
    assert rest_push_cost(REST_COLLECTION) == 1
    assert rest_push_cost(REST_COLLECTION + 1) == 2


def test_poll_schedule_backs_off_1_4_10_15_then_30() -> None:
    schedule = PollSchedule(2)
    assert [schedule.wait(n) for n in range(7)] == [2, 8, 20, 30, 60, 60, 60]
    assert PollSchedule(0.01).wait(0) == pytest.approx(0.01)
    assert PollSchedule(0.01).wait(10) == pytest.approx(0.3)
    assert PollSchedule().first == 2.0


def test_a_job_finishing_within_60_s_costs_at_most_4_polls() -> None:
    schedule = PollSchedule(2)
    # Polls fall at 2, 10, 30 and 60 s.
    assert [schedule.polls_for(s) for s in (0, 2, 2.1, 10, 10.5, 30, 31, 60)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert max(schedule.polls_for(s / 10) for s in range(601)) == 4
    assert schedule.polls_for(60.5) == 5
    assert schedule.polls_for(3600) == 4 + 59  # then one a minute: at 120, 180, ..., 3600 s


# -- the poll loop ----------------------------------------------------------------------------------------------


class ScriptedSalesforce:
    """Answers each ``call`` with the next scripted job info (or raises it), recording what was asked."""

    tenant = "t1"

    def __init__(self, answers: list[dict[str, Any] | Exception]) -> None:
        self.answers: Iterator[dict[str, Any] | Exception] = iter(answers)
        self.calls: list[str] = []

    def call(self, operation: Any, *, what: str) -> dict[str, Any]:
        self.calls.append(what)
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _wait(answers: list[dict[str, Any] | Exception], *, polls: int = 0,
          slice_over: Any = lambda: False) -> tuple[dict[str, Any] | Exception, list[float], list[int], list[str]]:
    sf = ScriptedSalesforce(answers)
    slept: list[float] = []
    saved: list[int] = []
    options = BulkOptions(mode="auto", schedule=PollSchedule(2), sleep=slept.append)
    try:
        outcome: dict[str, Any] | Exception = wait_for_job(
            cast(TenantSalesforce, sf), "ingest", "750x", polls=polls, options=options, slice_over=slice_over,
            saved=saved.append)
    except (BulkJobLost, SliceEnded) as exc:
        outcome = exc
    return outcome, slept, saved, sf.calls


def test_polls_back_off_and_are_saved_until_the_job_completes() -> None:
    done = {"state": "JobComplete", "numberRecordsProcessed": 3}
    outcome, slept, saved, calls = _wait([{"state": "UploadComplete"}, {"state": "InProgress"},
                                          {"state": "InProgress"}, {"state": "InProgress"}, {"state": "InProgress"},
                                          done])
    assert outcome == done
    assert slept == [2, 8, 20, 30, 60, 60]  # the injected sleep, never time.sleep
    assert saved == [1, 2, 3, 4, 5, 6]
    assert calls == ["bulk_ingest_poll"] * 6  # each poll is one metered call


def test_a_resumed_job_keeps_its_place_in_the_backoff() -> None:
    outcome, slept, saved, _ = _wait([{"state": "InProgress"}, {"state": "JobComplete"}], polls=3)
    assert outcome == {"state": "JobComplete"}
    assert (slept, saved) == ([30, 60], [4, 5])


@pytest.mark.parametrize(("answer", "state"), [
    ({"state": "Failed", "errorMessage": "InvalidBatch : Field name not found : Foo"}, "Failed"),
    ({"state": "Aborted"}, "Aborted"),
    (SalesforceResourceNotFound("url", 404, "jobs", b'[{"errorCode": "NOT_FOUND"}]'), "unknown to Salesforce"),
])
def test_a_failed_aborted_or_vanished_job_is_lost(answer: dict[str, Any] | Exception, state: str) -> None:
    outcome, _, _, _ = _wait([{"state": "InProgress"}, answer])
    assert isinstance(outcome, BulkJobLost)
    assert (outcome.job_id, outcome.state) == ("750x", state)
    if state == "Failed":
        assert "Field name not found : Foo" in str(outcome)


def test_the_time_slice_is_checked_between_polls_not_before_the_first() -> None:
    outcome, slept, saved, calls = _wait([{"state": "InProgress"}], slice_over=lambda: True)
    assert isinstance(outcome, SliceEnded)
    assert (slept, saved, calls) == ([2], [1], ["bulk_ingest_poll"])  # one poll, then the slice ended
    # A resumed job polls once in its new slice however short it is: a slice over before its first poll would
    # end without moving the job on, and a slice shorter than a job's start would never poll at all.
    resumed, slept, saved, calls = _wait([{"state": "InProgress"}], polls=2, slice_over=lambda: True)
    assert isinstance(resumed, SliceEnded)
    assert (slept, saved, calls) == ([20], [3], ["bulk_ingest_poll"])


# -- ingest CSV -----------------------------------------------------------------------------------------------

EDGES: list[dict[str, Any]] = [
    {"External_Id__c": "e-1", "Company": "Acme, Inc.", "Title": 'He said "hi", then left', "AnnualRevenue": 1e20,
     "IsActive": True},
    {"External_Id__c": "e-2", "Company": "two\nlines", "Title": "crlf\r\ninside", "AnnualRevenue": 0.1,
     "IsActive": False},
    {"External_Id__c": "e-3", "Company": None, "Title": "", "AnnualRevenue": 1e-7, "NumberOfEmployees": 42},
    {"External_Id__c": "e-4", "Company": "Zoë, 東京 🚀", "Title": "  padded  ", "AnnualRevenue": -2.5},
    {"External_Id__c": "e-5", "City": "only here"},  # a field only this record has; it lacks the others
]
# What each cell must read as on Salesforce's side: empty leaves a field unchanged, #N/A sets it to null.
EXPECTED = [
    ["External_Id__c", "Company", "Title", "AnnualRevenue", "IsActive", "NumberOfEmployees", "City"],
    ["e-1", "Acme, Inc.", 'He said "hi", then left', "100000000000000000000", "true", "", ""],
    ["e-2", "two\nlines", "crlf\r\ninside", "0.1", "false", "", ""],
    ["e-3", NULL, NULL, "0.0000001", "", "42", ""],
    ["e-4", "Zoë, 東京 🚀", "  padded  ", "-2.5", "", "", ""],
    ["e-5", "", "", "", "", "", "only here"],
]


def test_ingest_csv_edge_cases_read_back_with_python_csv() -> None:
    data = write_records(EDGES)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows == EXPECTED
    assert "Zoë, 東京 🚀".encode() in data  # UTF-8, as Bulk API 2.0 reads it


def test_ingest_csv_edge_cases_read_back_as_salesforce_reads_them() -> None:
    header, rows = read_csv(write_records(EDGES).decode("utf-8"), "COMMA", "CRLF")
    assert [header, *[row.values for row in rows]] == EXPECTED
    assert [row.error for row in rows] == [None] * len(EDGES)


def test_floats_never_carry_an_exponent() -> None:
    values = [1e20, 0.1, 1e-7, 123456789.125, 1.5e300, -0.0, 3.0]
    _, rows = read_csv(write_records([{"AnnualRevenue": v} for v in values]).decode(), "COMMA", "CRLF")
    written = [row.values[0] for row in rows]
    assert written[:4] == ["100000000000000000000", "0.1", "0.0000001", "123456789.125"]
    assert all("e" not in w.lower() for w in written)
    assert [float(w) for w in written] == values  # nothing lost on the way


def test_a_lone_carriage_return_in_a_value_is_quoted() -> None:
    data = write_records([{"External_Id__c": "e-1", "Title": "old mac\rline"}]).decode()
    _, rows = read_csv(data, "COMMA", "CRLF")
    assert rows[0].values == ["e-1", "old mac\rline"]


_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=30)
_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), _TEXT,
                   st.floats(allow_nan=False, allow_infinity=False, width=64))
_RECORDS = st.lists(st.dictionaries(st.sampled_from(["A", "B", "C__c", "D"]), _VALUE, min_size=1), min_size=1,
                    max_size=8)


def _cell(record: dict[str, Any], name: str) -> str:
    if name not in record:
        return ""
    value = record[name]
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@settings(max_examples=300, deadline=None)
@given(_RECORDS)
def test_any_records_survive_salesforce_s_csv_reader(records: list[dict[str, Any]]) -> None:
    header, rows = read_csv(write_records(records).decode("utf-8"), "COMMA", "CRLF")
    assert header == list(dict.fromkeys(name for record in records for name in record))
    assert len(rows) == len(records)
    for record, row in zip(records, rows, strict=True):
        assert row.error is None
        for name, value in zip(header, row.values, strict=True):
            if isinstance(record.get(name), float):
                assert float(value) == record[name]
            else:
                assert value == _cell(record, name)


# -- query CSV ------------------------------------------------------------------------------------------------


def test_query_results_read_back_with_nulls_and_rest_datetimes() -> None:
    results = write_csv(
        ["Id", "SystemModstamp", "Company", "Title", "Email"],
        [["00Q1", "2024-05-07T22:07:19.000Z", 'Acme, "the" Inc.', "two\nlines", ""],
         ["00Q2", "2024-05-07T22:07:20.123+0000", "Zoë, 東京", "", "a@b.example"]],
        "COMMA", "LF").decode()
    assert read_records(results) == [
        {"Id": "00Q1", "SystemModstamp": "2024-05-07T22:07:19.000+0000", "Company": 'Acme, "the" Inc.',
         "Title": "two\nlines", "Email": None},
        {"Id": "00Q2", "SystemModstamp": "2024-05-07T22:07:20.123+0000", "Company": "Zoë, 東京", "Title": None,
         "Email": "a@b.example"},
    ]


def test_empty_query_results_are_no_records() -> None:
    assert read_records(write_csv(["Id", "SystemModstamp"], [], "COMMA", "LF").decode()) == []
    assert read_records("") == []


def test_only_a_whole_zulu_datetime_is_rewritten() -> None:
    results = write_csv(["Id", "Title"], [["1", "2024-05-07T22:07:19.000Z"], ["2", "at 2024-05-07T22:07:19.000Z"],
                                          ["3", "2024-05-07T22:07:19Z"]], "COMMA", "LF").decode()
    assert [r["Title"] for r in read_records(results)] == [
        "2024-05-07T22:07:19.000+0000", "at 2024-05-07T22:07:19.000Z", "2024-05-07T22:07:19Z"]


def test_values_pushed_by_csv_come_back_by_csv_unchanged() -> None:
    # Push CSV -> Salesforce's reader -> its query result writer -> the worker's reader: the same values.
    header, rows = read_csv(write_records(EDGES).decode("utf-8"), "COMMA", "CRLF")
    stored = [[None if v in ("", NULL) else v for v in row.values] for row in rows]
    results = write_csv(header, [[csv_value(v) for v in row] for row in stored], "COMMA", "LF").decode()
    assert read_records(results) == [dict(zip(header, row, strict=True)) for row in stored]
    assert read_records(results)[0]["Title"] == 'He said "hi", then left'
    assert read_records(results)[1]["Company"] == "two\nlines"


# -- settings ---------------------------------------------------------------------------------------------------


def test_bulk_settings_default_and_are_read() -> None:
    assert (WorkerSettings.from_env({}).bulk, WorkerSettings.from_env({}).bulk_poll_seconds) == ("auto", 2.0)
    for mode in ("auto", "never", "always"):
        assert WorkerSettings.from_env({"CRMSYNC_BULK": mode}).bulk == mode
    assert WorkerSettings.from_env({"CRMSYNC_BULK_POLL_SECONDS": "0.01"}).bulk_poll_seconds == 0.01


def test_an_unknown_bulk_mode_is_refused_naming_the_variable_and_the_choices() -> None:
    with pytest.raises(ValueError, match="CRMSYNC_BULK") as refused:
        WorkerSettings.from_env({"CRMSYNC_BULK": "sometimes"})
    assert str(refused.value) == "CRMSYNC_BULK='sometimes': expected auto or never or always"


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_poll_interval_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"CRMSYNC_BULK_POLL_SECONDS=.*expected a number above 0"):
        WorkerSettings.from_env({"CRMSYNC_BULK_POLL_SECONDS": raw})


# -- the pull's bookkeeping at the watermark, as the Bulk read uses it ---------------------------------------------

STAMP = "2024-05-07T22:07:19.000+0000"


class PagedSalesforce:
    """Answers a pull's requests by their metering label: REST pages, then a Bulk query job's one results page."""

    tenant = "t1"

    def __init__(self, ids: list[str]) -> None:
        self.records = [{"Id": i, "SystemModstamp": STAMP, "Title": None} for i in ids]
        self.asked: list[str] = []

    def call(self, operation: Any, *, what: str) -> Any:
        self.asked.append(what)
        first, rest = self.records[:REST_PAGE], self.records[REST_PAGE:]
        if what == "query":
            return {"totalSize": len(self.records), "done": not rest, "records": first,
                    **({"nextRecordsUrl": "/services/data/v59.0/query/01gRO0000016PIAYA2-2000"} if rest else {})}
        if what == "query_more":
            return {"totalSize": len(self.records), "done": True, "records": rest}
        if what == "bulk_query_create":
            return {"id": "750000000000001AAA"}
        if what == "bulk_query_poll":
            return {"state": "JobComplete"}
        if what == "bulk_query_results":  # Bulk reads every record from the stamp on, unordered
            rows = [[str(r["Id"]), STAMP.replace("+0000", "Z"), ""] for r in reversed(self.records)]
            return ResultsPage(write_csv(["Id", "SystemModstamp", "Title"], rows, "COMMA", "LF").decode(), None,
                               len(rows))
        raise AssertionError(what)


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def deliver(self, tenant: str, sobject: str, records: Any) -> None:
        self.records.extend(records)


def _pull_unchanged(client: redis.Redis, delivered_before: int, bulk: BulkOptions) -> tuple[list[str], list[str]]:
    """A pull of an org where nothing changed since the last one, which delivered ``delivered_before`` records
    all at the watermark's SystemModstamp (a mass update in one transaction stamps them alike)."""
    ids = [f"00Q{i:012d}AAA" for i in range(delivered_before)]
    PullCheckpoint(connection_id="c1", watermark=STAMP, boundary=dict.fromkeys(ids, STAMP)).save(client, "t1", "Lead")
    sf, sink = PagedSalesforce(ids), ListSink()
    run_pull(cast(TenantSalesforce, sf), client=client, sink=sink, jobs=JobStore(client), job_id="j1",
             connection_id="c1", sobject="Lead", fields=["Title"], bulk=bulk)
    return [r["Id"] for r in sink.records], sf.asked




def test_unchanged_records_at_the_watermark_are_not_delivered_again_by_rest(redis_client: redis.Redis) -> None:
    delivered, asked = _pull_unchanged(redis_client, 3_000, NO_BULK)
    assert asked == ["query", "query_more"]
    assert delivered == []


def test_unchanged_records_at_the_watermark_are_not_delivered_again_by_bulk(redis_client: redis.Redis) -> None:
    delivered, asked = _pull_unchanged(redis_client, 12_000, BulkOptions(mode="auto", sleep=lambda _: None))
    assert asked == ["query", "bulk_query_create", "bulk_query_poll", "bulk_query_results"]
    assert delivered == []
