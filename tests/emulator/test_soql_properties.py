"""Property: SOQL comparisons agree with SOQL's semantics on any data, nulls included."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.soql import compile_query
from emulator.store import Store
from tests.emulator.conftest import START

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
    "!=": operator.ne,
}


def _expected(value: int | None, op: str, threshold: int) -> bool:
    # SOQL: a null matches only != among comparisons with a value.
    if value is None:
        return op == "!="
    return OPERATORS[op](value, threshold)


@settings(max_examples=60, deadline=None)
@given(
    staff=st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=12),
    op=st.sampled_from(sorted(OPERATORS)),
    threshold=st.integers(-6, 6),
    descending=st.booleans(),
)
def test_numeric_filters_and_order(staff: list[int | None], op: str, threshold: int, descending: bool) -> None:
    store = Store(pod=1, clock=lambda: START)
    for i, count in enumerate(staff):
        store.create("Account", {"Name": f"A{i}", "NumberOfEmployees": count})
    direction = "DESC" if descending else "ASC"
    query = compile_query(f"SELECT Name, NumberOfEmployees FROM Account WHERE NumberOfEmployees {op} "
                          f"{threshold} ORDER BY NumberOfEmployees {direction}")
    rows = query.run(store.scan("Account"), "59.0")
    matching = [v for v in staff if _expected(v, op, threshold)]
    assert sorted(r["Name"] for r in rows) == sorted(f"A{i}" for i, v in enumerate(staff)
                                                     if _expected(v, op, threshold))
    values = [r["NumberOfEmployees"] for r in rows]
    nulls = [None] * matching.count(None)
    present = sorted((v for v in matching if v is not None), reverse=descending)
    assert values == (present + nulls if descending else nulls + present)
