"""Bulk API 2.0 end to end: real worker processes choose Bulk for large jobs and REST for small ones, against
the emulator over HTTPS, and every credit charged is a request the emulator counted.

Each test runs on its own tenant and org. A test that makes requests of its own (to abort a job, or to read
records back through simple-salesforce) checks the credits before them, or subtracts exactly the requests it
made. Jobs run at the org's bulk rate on the real clock: 0 processes a job by the next request; a slow rate
keeps one InProgress while the test acts on it.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

import pytest
import requests
from simple_salesforce.api import Salesforce

from tests.conftest import wait_until
from tests.e2e.conftest import Tenant, Workers
from worker import keys
from worker.enqueue import enqueue_pull, enqueue_push
from worker.jobs.cost import rest_pull_cost, rest_push_cost
from worker.jobs.parking import PauseStore
from worker.jobs.state import JobRecord
from worker.notifications import recent

LEADS = 30_000  # 15 REST pages, or one Bulk query job
PUSHED = 20_000  # 100 sObject Collections, or one Bulk ingest job of two batches
TIMEOUT = 180
SMART = "\u6771\u4eac \u2018smart\u2019 \u201cquotes\u201d \U0001f680"  # unicode beyond Latin-1


# -- helpers ------------------------------------------------------------------------------------------------------


def calls(tenant: Tenant, method: str, pattern: str) -> int:
    """Requests the emulator served for the org with ``method`` on a path under /services/data/vXX.X/ that
    matches ``pattern`` (a regular expression over the rest of the path); its counts cover every request."""
    counts = tenant.emulator.control.request_counts(tenant.org.name)
    wanted = re.compile(rf"{method} /services/data/v[0-9.]+/{pattern}")
    return sum(n for key, n in counts.items() if wanted.fullmatch(key))


def bulk_requests(tenant: Tenant) -> int:
    return calls(tenant, "[A-Z]+", "jobs/.*")


def delivered(workers: Workers, tenant: Tenant, sobject: str = "Lead") -> list[dict[str, Any]]:
    path = workers.data_dir / tenant.name / f"{sobject}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def delivered_once(workers: Workers, tenant: Tenant, expected: int, sobject: str = "Lead") -> list[dict[str, Any]]:
    records = delivered(workers, tenant, sobject)
    ids = [r["Id"] for r in records]
    assert len(set(ids)) == expected, "a record was never delivered"
    assert len(ids) == expected, f"{len(ids) - len(set(ids))} records were delivered twice"
    return records


def session(tenant: Tenant) -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, overrides the emulator's CA
    http.verify = tenant.emulator.ca_bundle
    http.headers["Authorization"] = f"Bearer {tenant.emulator.control.issue_token(tenant.org.name)}"
    return http


def salesforce(tenant: Tenant) -> Salesforce:
    token = tenant.emulator.control.issue_token(tenant.org.name)
    return Salesforce(instance_url=tenant.org.instance_url, session_id=token, session=session(tenant),
                      version="59.0")


def bulk_api(tenant: Tenant, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One raw Bulk API 2.0 request (counted by the emulator: the caller accounts for it)."""
    reply = session(tenant).request(method, f"{tenant.org.instance_url}/services/data/v59.0/jobs/{path}",
                                    timeout=30, **kwargs)
    assert reply.status_code in (200, 204), reply.text
    return cast(dict[str, Any], reply.json()) if reply.content else {}


def by_external_id(tenant: Tenant, prefix: str, fields: str = "Id") -> dict[str, list[dict[str, Any]]]:
    """Every Lead whose External_Id__c starts with ``prefix``, by external id (read through REST: counted)."""
    found: dict[str, list[dict[str, Any]]] = {}
    result = salesforce(tenant).query_all(
        f"SELECT External_Id__c, {fields} FROM Lead WHERE External_Id__c LIKE '{prefix}%'")
    for record in result["records"]:
        found.setdefault(record["External_Id__c"], []).append(record)
    return found


def pull_state(tenant: Tenant, sobject: str = "Lead") -> dict[str, Any]:
    raw = cast(bytes | None, tenant.client.hget(keys.pull_checkpoint(tenant.name, sobject), "state"))
    return cast(dict[str, Any], json.loads(raw)) if raw else {}


def push_state(tenant: Tenant, job_id: str) -> dict[str, Any]:
    raw = cast(bytes | None, tenant.client.hget(keys.push_records(tenant.name, job_id), "bulk"))
    return cast(dict[str, Any], json.loads(raw)) if raw else {}


def log_events(workers: Workers, tenant: Tenant, event: str) -> list[dict[str, Any]]:
    found = []
    for line in workers.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event and entry.get("tenant") == tenant.name:
            found.append(entry)
    return found


def job_ids_polled(tenant: Tenant, kind: str) -> set[str]:
    return {m.group(1) for e in tenant.emulator.control.request_log(tenant.org.name)
            if (m := re.search(rf"/jobs/{kind}/(750\w+)", e["path"]))}


def wait_done(tenant: Tenant, job_id: str) -> JobRecord:
    job = tenant.wait_done(job_id, timeout=TIMEOUT)
    assert job.state == "done", job
    return job


def lead_rows(prefix: str, count: int, missing_last_name: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    return [{"External_Id__c": f"{prefix}{i}", "Company": "Acme",
             **({} if i in missing_last_name else {"LastName": f"Doe {i}"})} for i in range(count)]


# -- large jobs go by Bulk ----------------------------------------------------------------------------------------


def test_a_large_pull_goes_by_bulk_delivers_each_record_once_then_pulls_only_changes(
        workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=LEADS)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    job = tenant.pull(timeout=TIMEOUT)
    assert (job.state, job.records) == ("done", LEADS), job
    records = delivered_once(workers, tenant, LEADS)
    assert calls(tenant, "POST", "jobs/query") == 1
    assert calls(tenant, "GET", r"jobs/query/\w+/results") == 1
    assert calls(tenant, "GET", "query/?") == 1  # the first REST page only
    # The first REST page, /limits, create, one poll, one results page: a third of 15 REST pages.
    assert job.credits == tenant.used_credits() == tenant.counted_requests() == 5
    assert job.credits < rest_pull_cost(LEADS)

    # What Bulk delivered is what REST reads: the same values, nulls and datetimes in REST's form.
    by_rest = {r["Id"]: {k: v for k, v in r.items() if k != "attributes"} for r in salesforce(tenant).query_all(
        "SELECT Id, SystemModstamp, FirstName, LastName, Company, Email, Status FROM Lead")["records"]}
    assert {r["Id"]: r for r in records} == by_rest

    sf = salesforce(tenant)
    changed = [r["Id"] for r in records[20_000:20_010]]
    for record_id in changed:
        sf.Lead.update(record_id, {"Title": "Changed"})
    before, used = tenant.counted_requests(), tenant.used_credits()
    again = tenant.pull(timeout=TIMEOUT)
    assert (again.state, again.records, again.credits) == ("done", 10, 1)
    assert sorted(r["Id"] for r in delivered(workers, tenant)[LEADS:]) == sorted(changed)
    assert tenant.counted_requests() - before == tenant.used_credits() - used == 1
    assert calls(tenant, "POST", "jobs/query") == 1


def test_a_large_incremental_pull_goes_by_bulk_and_skips_what_was_delivered(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=LEADS)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    assert tenant.pull(timeout=TIMEOUT).records == LEADS
    # 12,000 seeded Leads updated by a Bulk push: rows a Bulk job writes at once share one SystemModstamp.
    updates: list[dict[str, object]] = [{"External_Id__c": f"LEAD-{i:06d}", "Title": "Bulk-updated"}
                                        for i in range(5_000, 17_000)]
    pushed = tenant.push(updates, timeout=TIMEOUT)
    assert (pushed.state, pushed.records, pushed.failed_records) == ("done", 12_000, 0)
    assert calls(tenant, "POST", "jobs/ingest") == 1
    before, used = tenant.counted_requests(), tenant.used_credits()
    again = tenant.pull(timeout=TIMEOUT)
    assert (again.state, again.records) == ("done", 12_000)
    fresh = delivered(workers, tenant)[LEADS:]
    assert len(fresh) == len({r["Id"] for r in fresh}) == 12_000
    assert calls(tenant, "POST", "jobs/query") == 2  # the first REST page said the rest was cheaper by Bulk
    assert again.credits == tenant.counted_requests() - before == tenant.used_credits() - used
    assert again.credits < rest_pull_cost(12_000)


def test_a_large_push_goes_by_bulk_and_keeps_each_failure(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    bad = frozenset({137, 9_999, 10_000, 19_999})  # in both ingest batches, at their edges
    job = tenant.push(lead_rows("bp-", PUSHED, missing_last_name=bad), timeout=TIMEOUT)
    assert (job.state, job.records, job.failed_records) == ("done", PUSHED - 4, 4), job
    errors = sorted(job.errors, key=lambda e: e["index"])
    assert [(e["index"], e["external_id"]) for e in errors] == [(i, f"bp-{i}") for i in sorted(bad)]
    for error in errors:
        assert error["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
        assert error["errors"][0]["fields"] == ["LastName"]
        assert "Required fields are missing" in error["errors"][0]["message"]
    assert calls(tenant, "POST", "jobs/ingest") == calls(tenant, "PUT", r"jobs/ingest/\w+/batches") == 1
    assert calls(tenant, "GET", r"jobs/ingest/\w+/failedResults") == 1
    assert calls(tenant, "PATCH", "composite/.*") == 0
    # /limits, create, upload, close, one poll, failedResults: 6 credits against 100 by sObject Collections.
    assert job.credits == tenant.used_credits() == tenant.counted_requests() == 6
    assert job.credits < rest_push_cost(PUSHED)

    found = by_external_id(tenant, "bp-")
    assert set(found) == {f"bp-{i}" for i in range(PUSHED) if i not in bad}
    assert all(len(records) == 1 for records in found.values())


def test_csv_edge_cases_reach_salesforce_as_sent(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    count = 2_000  # 10 sObject Collections or 5 Bulk requests: Bulk
    first = [{"External_Id__c": f"csv-{i}", "LastName": f"L{i}", "Company": "Acme", "Title": "Original",
              "City": "Paris", "AnnualRevenue": 1000.0} for i in range(count)]
    assert tenant.push(first, timeout=TIMEOUT).records == count
    edits: dict[int, dict[str, Any]] = {
        0: {"Company": "Acme, Inc.", "Title": 'He said "hi", then left'},
        1: {"Title": "line one\nline two", "FirstName": '"quoted"'},
        2: {"Title": None, "City": None},  # null
        3: {"Title": ""},  # an empty string is a null too, as REST reads it
        4: {"FirstName": "Zoë", "Title": SMART, "City": "São Paulo"},
        6: {"AnnualRevenue": 1e20, "NumberOfEmployees": 42},
        7: {"AnnualRevenue": 0.1, "Title": "crlf\r\ninside"},
        8: {"Title": "  padded  ", "Company": ",leading comma"},
        9: {"Title": "#N/A"},  # Bulk's null marker, sent as a value: Salesforce reads a null
    }
    second = [{"External_Id__c": f"csv-{i}", "Title": f"T{i}", **edits.get(i, {})} for i in range(count)]
    second[5] = {"External_Id__c": "csv-5", "City": "Lyon"}  # no Title while the others have one: unchanged
    before = tenant.counted_requests()
    job = tenant.push(second, timeout=TIMEOUT)
    assert (job.state, job.records, job.failed_records) == ("done", count, 0), job
    assert calls(tenant, "POST", "jobs/ingest") == 2
    assert job.credits == tenant.counted_requests() - before == 4  # create, upload, close, one poll

    found = by_external_id(tenant, "csv-", "FirstName, LastName, Company, Title, City, AnnualRevenue, "
                                           "NumberOfEmployees")
    assert len(found) == count
    lead = {key: records[0] for key, records in found.items()}
    assert (lead["csv-0"]["Company"], lead["csv-0"]["Title"]) == ("Acme, Inc.", 'He said "hi", then left')
    assert (lead["csv-1"]["Title"], lead["csv-1"]["FirstName"]) == ("line one\nline two", '"quoted"')
    assert (lead["csv-2"]["Title"], lead["csv-2"]["City"], lead["csv-2"]["Company"]) == (None, None, "Acme")
    assert lead["csv-3"]["Title"] is None
    assert (lead["csv-4"]["FirstName"], lead["csv-4"]["Title"], lead["csv-4"]["City"]) == (
        "Zoë", SMART, "São Paulo")
    assert (lead["csv-5"]["Title"], lead["csv-5"]["City"]) == ("Original", "Lyon")
    assert (lead["csv-6"]["AnnualRevenue"], lead["csv-6"]["NumberOfEmployees"]) == (1e20, 42)
    assert (lead["csv-7"]["AnnualRevenue"], lead["csv-7"]["Title"]) == (0.1, "crlf\r\ninside")
    assert (lead["csv-8"]["Title"], lead["csv-8"]["Company"]) == ("  padded  ", ",leading comma")
    assert lead["csv-9"]["Title"] is None
    for i in range(10, count):  # the plain rows: changed where sent, the rest untouched
        assert (lead[f"csv-{i}"]["Title"], lead[f"csv-{i}"]["LastName"], lead[f"csv-{i}"]["City"],
                lead[f"csv-{i}"]["AnnualRevenue"]) == (f"T{i}", f"L{i}", "Paris", 1000.0)


def test_booleans_are_written_as_true_and_false(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    count = 2_000
    tenant.push([{"External_Id__c": f"c-{i}", "Name": f"C{i}", "IsActive": True} for i in range(count)],
                sobject="Campaign", timeout=TIMEOUT)
    # Even records switched off; odd ones name no IsActive (still a column): unchanged.
    job = tenant.push([{"External_Id__c": f"c-{i}", **({"IsActive": False} if i % 2 == 0 else {})}
                       for i in range(count)], sobject="Campaign", timeout=TIMEOUT)
    assert (job.state, job.records) == ("done", count)
    assert calls(tenant, "POST", "jobs/ingest") == 2
    result = salesforce(tenant).query_all("SELECT External_Id__c, IsActive FROM Campaign WHERE External_Id__c "
                                          "LIKE 'c-%'")["records"]
    active = {r["External_Id__c"]: r["IsActive"] for r in result}
    assert active == {f"c-{i}": i % 2 == 1 for i in range(count)}


def test_a_value_with_a_lone_carriage_return_is_upserted(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    rows = lead_rows("cr-", 2_000)
    rows[7]["Title"] = "old mac\rline"
    job = tenant.push(rows, timeout=TIMEOUT)
    assert (job.state, job.failed_records) == ("done", 0), job
    found = by_external_id(tenant, "cr-", "Title")
    assert len(found) == 2_000
    assert found["cr-7"][0]["Title"] == "old mac\rline"


# -- small jobs stay on REST ------------------------------------------------------------------------------------


def test_small_jobs_cost_what_rest_costs_and_never_touch_bulk(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=500)
    pulled = tenant.pull()
    assert (pulled.state, pulled.records, pulled.credits) == ("done", 500, 1)
    delivered_once(workers, tenant, 500)
    pushed = tenant.push(lead_rows("small-", 500))
    assert (pushed.state, pushed.records, pushed.credits) == ("done", 500, 3)
    assert bulk_requests(tenant) == 0
    assert calls(tenant, "GET", "limits/?") == 0  # the Bulk budgets are not even read
    assert tenant.used_credits() == tenant.counted_requests() == 4


# -- budgets ---------------------------------------------------------------------------------------------------


def _notices(tenant: Tenant, kind: str) -> list[Any]:
    return [n for n in recent(tenant.client, tenant.name, limit=100) if n.kind == kind]


def test_without_bulk_budget_jobs_go_by_rest_and_say_so(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=LEADS)
    tenant.emulator.control.set_bulk_limits(tenant.org.name, query_jobs=0, batches=0)
    pulled = tenant.pull(timeout=TIMEOUT)
    assert (pulled.state, pulled.records) == ("done", LEADS)
    delivered_once(workers, tenant, LEADS)
    assert pulled.credits == rest_pull_cost(LEADS) + 1  # and the one read of /limits
    pushed = tenant.push(lead_rows("nb-", PUSHED), timeout=TIMEOUT)
    assert (pushed.state, pushed.records, pushed.credits) == ("done", PUSHED, rest_push_cost(PUSHED))
    assert bulk_requests(tenant) == 0
    assert calls(tenant, "GET", "limits/?") == 1  # read once, kept for the hour
    assert tenant.used_credits() == tenant.counted_requests()
    budgets = {n.details.get("budget") for n in wait_until(
        lambda: len(_notices(tenant, "bulk_budget_exhausted")) >= 2 and _notices(tenant, "bulk_budget_exhausted"),
        30, "the bulk_budget_exhausted notifications")}
    assert budgets == {"query_jobs", "batches"}


def test_a_query_job_refused_for_its_budget_falls_back_to_rest(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=LEADS)
    org = tenant.org.name
    tenant.emulator.control.set_bulk_rate(org, 0)
    assert tenant.pull("Lead", timeout=TIMEOUT).records == LEADS  # by Bulk: the budgets are read and kept
    assert calls(tenant, "POST", "jobs/query") == 1
    tenant.emulator.control.set_bulk_limits(org, query_jobs=1)  # used up behind the worker's back
    job = tenant.pull("Contact", timeout=TIMEOUT)
    assert (job.state, job.records) == ("done", LEADS), job
    delivered_once(workers, tenant, LEADS, "Contact")
    refused = [e for e in tenant.emulator.control.request_log(org)
               if e["method"] == "POST" and e["path"].endswith("/jobs/query")]
    assert [e["status"] for e in refused] == [200, 400]
    assert calls(tenant, "GET", "limits/?") == 1
    assert tenant.used_credits() == tenant.counted_requests()
    notice = wait_until(lambda: _notices(tenant, "bulk_budget_exhausted"), 30, "bulk_budget_exhausted")[0]
    assert notice.details.get("budget") == "query_jobs"
    assert "Max bulk v2 query jobs" in notice.message
    # The budget is marked spent: the next large pull goes straight to REST, without asking.
    assert tenant.pull("Account", timeout=TIMEOUT).records == LEADS
    assert calls(tenant, "POST", "jobs/query") == 2


def _push_past_the_batch_budget(tenant: Tenant, bad: frozenset[int]) -> tuple[JobRecord, int, int]:
    """A 20,000-record push whose ingest job fails at its second batch (ExceededQuota) after the first 10,000:
    the budgets were read when there were plenty. Returns the job, and the emulator's count and the credits
    used before it."""
    org = tenant.org.name
    tenant.emulator.control.set_bulk_rate(org, 0)
    assert tenant.push(lead_rows("warm-", 2_000), timeout=TIMEOUT).records == 2_000  # budgets read: 15,000
    tenant.emulator.control.set_bulk_limits(org, batches=2)  # one batch left of the two the next push needs
    before, used = tenant.counted_requests(), tenant.used_credits()
    job = tenant.push(lead_rows("bq-", PUSHED, missing_last_name=bad), timeout=TIMEOUT)
    assert job.state == "done", job
    return job, before, used


def test_an_ingest_job_past_the_batch_budget_leaves_the_rest_to_rest(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    bad = frozenset({3, 15_000})  # one in the batch Bulk processed, one in what it left to REST
    job, before, used = _push_past_the_batch_budget(tenant, bad)
    assert job.credits == tenant.counted_requests() - before == tenant.used_credits() - used
    assert calls(tenant, "POST", "jobs/ingest") == 2
    assert calls(tenant, "GET", r"jobs/ingest/\w+/unprocessedrecords") == 1
    assert calls(tenant, "PATCH", "composite/sobjects/Lead/External_Id__c") == 10_000 // 200
    assert [e["state"] for e in log_events(workers, tenant, "bulk_job_lost")] == ["Failed"]
    notice = wait_until(lambda: _notices(tenant, "bulk_budget_exhausted"), 30, "bulk_budget_exhausted")[0]
    assert notice.details.get("budget") == "batches"
    assert job.failed_records == 2
    assert {e["external_id"] for e in job.errors} == {"bq-3", "bq-15000"}
    found = by_external_id(tenant, "bq-")
    assert set(found) == {f"bq-{i}" for i in range(PUSHED) if i not in bad}
    assert all(len(records) == 1 for records in found.values())
    # The budget is marked spent: the next large push goes by REST without trying Bulk.
    assert tenant.push(lead_rows("after-", 2_000), timeout=TIMEOUT).records == 2_000
    assert calls(tenant, "POST", "jobs/ingest") == 2


def test_errors_of_records_left_to_rest_keep_their_index_in_the_push(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    job, _, _ = _push_past_the_batch_budget(tenant, frozenset({3, 15_000}))
    assert sorted((e["index"], e["external_id"]) for e in job.errors) == [(3, "bq-3"), (15_000, "bq-15000")]


def test_records_a_failed_ingest_job_processed_are_counted(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    job, _, _ = _push_past_the_batch_budget(tenant, frozenset({3, 15_000}))
    assert (job.records, job.failed_records) == (PUSHED - 2, 2)


# -- lost jobs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["aborted", "vanished"])
def test_a_pull_whose_bulk_job_is_lost_reads_again_and_delivers_each_record_once(
        workers: Workers, make_tenant, ending: str) -> None:
    tenant: Tenant = make_tenant(records=LEADS)
    org = tenant.org.name
    tenant.emulator.control.set_bulk_rate(org, 100)  # minutes for the first job: it is InProgress throughout
    job_id = enqueue_pull(tenant.client, tenant.name, "Lead")

    def polled() -> dict[str, Any] | None:
        bulk = pull_state(tenant).get("bulk")
        return bulk if bulk and bulk["polls"] >= 1 else None

    lost = wait_until(polled, TIMEOUT, "the Bulk query job to be polled", lambda: pull_state(tenant))["job_id"]
    tenant.emulator.control.set_bulk_rate(org, 0)  # for the next job only
    ours = 0
    if ending == "aborted":  # by someone in the org, through the API
        assert bulk_api(tenant, "PATCH", f"query/{lost}", json={"state": "Aborted"})["state"] == "Aborted"
        ours += 1
    else:  # Salesforce no longer knows the job (it deletes jobs after 7 days): its polls answer 404
        with tenant.emulator.registry.lock:
            jobs = tenant.emulator.registry.org(org).bulk
            jobs.remove(jobs.get("query", lost))
    job = wait_done(tenant, job_id)
    assert job.records == LEADS
    delivered_once(workers, tenant, LEADS)
    assert calls(tenant, "POST", "jobs/query") == 2
    assert len(job_ids_polled(tenant, "query")) == 2
    events = log_events(workers, tenant, "bulk_job_lost")
    assert [(e["bulk_job"], e["state"]) for e in events] == [
        (lost, "Aborted" if ending == "aborted" else "unknown to Salesforce")]
    assert events[0]["credits_spent"] >= 2  # its create and at least one poll
    assert job.credits == tenant.used_credits() == tenant.counted_requests() - ours


def test_a_push_whose_bulk_job_is_aborted_upserts_the_rest_by_rest_once(workers: Workers, make_tenant) -> None:
    tenant: Tenant = make_tenant(records=0)
    org = tenant.org.name
    tenant.emulator.control.set_bulk_rate(org, 200)  # 100 s for the whole job: aborted long before
    bad = frozenset({5, 19_990})  # one processed by Bulk before the abort, one left to REST
    job_id = enqueue_push(tenant.client, tenant.name, "Lead", lead_rows("ab-", PUSHED, bad), "External_Id__c")
    state = wait_until(lambda: push_state(tenant, job_id).get("stage") == "closed"
                       and push_state(tenant, job_id)["polls"] >= 4 and push_state(tenant, job_id),
                       TIMEOUT, "the ingest job to be polled", lambda: push_state(tenant, job_id))
    assert bulk_api(tenant, "PATCH", f"ingest/{state['job_id']}", json={"state": "Aborted"})["state"] == "Aborted"
    processed = bulk_api(tenant, "GET", f"ingest/{state['job_id']}")["numberRecordsProcessed"]
    assert 5 < processed < 19_990
    job = wait_done(tenant, job_id)
    assert job.credits == tenant.used_credits() == tenant.counted_requests() - 2
    assert calls(tenant, "GET", r"jobs/ingest/\w+/unprocessedrecords") == 1
    assert calls(tenant, "PATCH", "composite/sobjects/Lead/External_Id__c") == -(-(PUSHED - processed) // 200)
    assert [e["state"] for e in log_events(workers, tenant, "bulk_job_lost")] == ["Aborted"]

    found = by_external_id(tenant, "ab-")
    assert set(found) == {f"ab-{i}" for i in range(PUSHED) if i not in bad}
    assert all(len(records) == 1 for records in found.values())
    assert job.failed_records == 2
    errors = {(e["external_id"], e["errors"][0]["statusCode"]) for e in job.errors}
    assert errors == {(f"ab-{i}", "REQUIRED_FIELD_MISSING") for i in bad}
    assert [e["index"] for e in job.errors if e["external_id"] == "ab-5"] == [5]  # the one Bulk reported


# -- credits run out mid-job --------------------------------------------------------------------------------------


def test_a_pull_parked_mid_poll_resumes_with_the_same_bulk_job(workers: Workers, make_tenant) -> None:
    # Credits for the first REST page, /limits and the create: the first poll finds the bucket empty.
    tenant: Tenant = make_tenant(records=LEADS)
    tenant.bucket.take(tenant.name, 100_000 - 3)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    parked = tenant.pull(timeout=TIMEOUT)
    assert parked.state == "parked", parked
    assert "no API credits left" in parked.error
    state = PauseStore(tenant.client).get(tenant.name)
    assert state is not None
    assert state.reason == "quota_exhausted"
    bulk = pull_state(tenant)["bulk"]
    assert (bulk["polls"], bulk["pages"]) == (0, 0)
    assert calls(tenant, "POST", "jobs/query") == 1
    assert tenant.counted_requests() == parked.credits == 3

    tenant.bucket.set_limit(tenant.name, 200_000, actor="e2e")  # the parked job resumes by itself
    job = wait_done(tenant, parked.job_id)
    assert job.records == LEADS
    delivered_once(workers, tenant, LEADS)
    assert calls(tenant, "POST", "jobs/query") == 1  # the same Salesforce job, not a second one
    assert job_ids_polled(tenant, "query") == {bulk["job_id"]}
    assert job.credits == tenant.used_credits() - (100_000 - 3) == tenant.counted_requests() == 5


def test_a_push_parked_mid_poll_resumes_with_the_same_bulk_job(workers: Workers, make_tenant) -> None:
    # Credits for /limits, create, upload and close: the first poll finds the bucket empty.
    tenant: Tenant = make_tenant(records=0)
    tenant.bucket.take(tenant.name, 100_000 - 4)
    tenant.emulator.control.set_bulk_rate(tenant.org.name, 0)
    parked = tenant.push(lead_rows("pk-", PUSHED), timeout=TIMEOUT)
    assert parked.state == "parked", parked
    state = push_state(tenant, parked.job_id)
    assert (state["stage"], state["polls"]) == ("closed", 0)
    assert tenant.counted_requests() == parked.credits == 4

    tenant.bucket.set_limit(tenant.name, 200_000, actor="e2e")
    job = wait_done(tenant, parked.job_id)
    assert (job.records, job.failed_records) == (PUSHED, 0)
    assert calls(tenant, "POST", "jobs/ingest") == calls(tenant, "PUT", r"jobs/ingest/\w+/batches") == 1
    assert job_ids_polled(tenant, "ingest") == {state["job_id"]}
    assert job.credits == tenant.used_credits() - (100_000 - 4) == tenant.counted_requests() == 5
    found = by_external_id(tenant, "pk-")
    assert len(found) == PUSHED
    assert all(len(records) == 1 for records in found.values())
