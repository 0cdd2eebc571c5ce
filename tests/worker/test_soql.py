"""No job input can inject SOQL: names follow Salesforce's rules, literals are escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota.errors import InvalidInput
from worker.errors import InvalidName
from worker.salesforce.soql import check_name, datetime_literal, literal, pull_query


@pytest.mark.parametrize("name", ["Lead", "Account", "External_Id__c", "ns__Thing__c", "Custom_Object__mdt",
                                  "A1", "a" * 80])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "1Lead", "Lead WHERE Id != null", "Lead;", "Lead--", "Lead__", "_Lead",
                                  "Le__ad__c__c", "Lead)", "Id, (SELECT Id FROM Contacts)", "Lead\n", "Leäd",
                                  "a" * 81, "Lead'", None, 5])
def test_names_that_could_inject_are_refused(name: object) -> None:
    with pytest.raises(InvalidName):
        check_name(name)


@given(st.text())
def test_any_checked_name_is_a_single_identifier(name: str) -> None:
    try:
        checked = check_name(name)
    except InvalidName:
        return
    assert checked.replace("_", "").isascii()
    assert checked.replace("_", "").isalnum()


@pytest.mark.parametrize(("value", "expected"), [
    ("O'Brien", r"'O\'Brien'"),
    ("back\\slash", r"'back\\slash'"),
    ("line\nbreak", r"'line\nbreak'"),
    ('say "hi"', r"'say \"hi\"'"),
    (None, "null"),
    (True, "true"),
    (42, "42"),
])
def test_literals_are_escaped(value: str | bool | int | None, expected: str) -> None:
    assert literal(value) == expected


@given(st.text())
def test_string_literals_never_end_early(text: str) -> None:
    quoted = literal(text)
    inner = quoted[1:-1]
    # Every quote inside is escaped: remove escaped pairs, and no bare quote may remain.
    assert quoted[0] == quoted[-1] == "'"
    assert "'" not in inner.replace("\\\\", "").replace("\\'", "")


def test_datetime_literals_are_utc_and_unquoted() -> None:
    local = datetime(2024, 5, 7, 22, 7, 19, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert datetime_literal(local) == "2024-05-07T20:07:19.123Z"
    with pytest.raises(InvalidInput):
        datetime_literal(datetime(2024, 5, 7))


def test_pull_query() -> None:
    since = datetime(2024, 1, 1, tzinfo=UTC)
    assert pull_query("Lead", ["Email", "Id"], since) == (
        "SELECT Id, SystemModstamp, Email FROM Lead WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z "
        "ORDER BY SystemModstamp ASC"
    )
    assert pull_query("Case", [], None) == "SELECT Id, SystemModstamp FROM Case ORDER BY SystemModstamp ASC"
    with pytest.raises(InvalidName):
        pull_query("Lead", ["Email FROM User"], None)
