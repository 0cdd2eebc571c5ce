"""The SOQL subset: ``SELECT f, ... | COUNT() FROM T [WHERE ...] [ORDER BY f [ASC|DESC], ...] [LIMIT n]``.

A query compiles once (cached by text) into a predicate, a sort order and a projection over stored records.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from emulator.errors import ApiError, malformed_query
from emulator.ids import to_18
from emulator.schema import NUMBER_TYPES, Field, SObject, lookup_object
from emulator.sftime import format_epoch, parse_date, parse_datetime

__all__ = ["Query", "compile_query"]

Record = dict[str, Any]
Predicate = Callable[[Record], bool]

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<op><=|>=|!=|<>|=|<|>)
    |(?P<punct>[(),])
    |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_KEYWORDS = frozenset({"select", "from", "where", "and", "or", "not", "in", "like", "order", "by",
                       "asc", "desc", "limit", "null", "true", "false"})


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int

    @property
    def keyword(self) -> str:
        return self.text.lower() if self.kind == "word" else ""


@dataclass(frozen=True)
class Query:
    """A compiled query: run it over an object's records to get the projected result rows.

    A ``SELECT COUNT()`` query (``count``) selects no fields: ``matches`` is its answer.
    """

    sobject: SObject
    fields: tuple[str, ...]
    where: Predicate | None
    order: tuple[tuple[str, bool], ...]
    limit: int | None
    count: bool = False

    @property
    def long_text_fields(self) -> int:
        """How many custom long text area (or rich text area) fields it selects: two or more cap a page at 200."""
        return sum(1 for name in self.fields if self.sobject.fields[name].long_text and name.endswith("__c"))

    def matches(self, records: Iterable[Record]) -> int:
        """How many records match, up to the limit (``SELECT COUNT()``'s answer)."""
        found = sum(1 for _ in (records if self.where is None else filter(self.where, records)))
        return found if self.limit is None else min(found, self.limit)

    def run(self, records: Iterable[Record], version: str) -> list[Record]:
        """Matching records, ordered and limited, as query result rows with ``attributes``."""
        rows: Iterable[Record] = records if self.where is None else filter(self.where, records)
        if self.order:
            rows = list(rows)
            for name, descending in reversed(self.order):
                rows.sort(key=functools.partial(_sort_key, name), reverse=descending)
        if self.limit is not None:
            rows = islice(rows, self.limit)
        kind = self.sobject.name
        base = f"/services/data/v{version}/sobjects/{kind}/"
        return [
            {"attributes": {"type": kind, "url": base + r["Id"]}, **{f: r[f] for f in self.fields}}
            for r in rows
        ]


def _sort_key(name: str, record: Record) -> tuple[bool, Any]:
    # Nulls sort low, so SOQL's defaults follow: first in ascending order, last in descending order.
    value = _fold(record[name])
    return value is not None, 0 if value is None else value


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _syntax_error(text, position, text[position:].split(None, 1)[0])
        if match.lastgroup != "ws":
            tokens.append(_Token(match.lastgroup or "", match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "<EOF>", len(text)))
    return tokens


def _syntax_error(text: str, column: int, found: str) -> ApiError:
    return malformed_query(
        f"\n{text}\n{' ' * column}^\nERROR at Row:1:Column:{column + 1}\nunexpected token: '{found}'"
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.at = 0
        self.sobject: SObject | None = None

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, token: _Token | None = None) -> ApiError:
        token = token or self.peek()
        return _syntax_error(self.text, token.column, token.text)

    def expect(self, keyword: str) -> None:
        if self.peek().keyword != keyword:
            raise self.fail()
        self.at += 1

    def accept(self, keyword: str) -> bool:
        if self.peek().keyword == keyword:
            self.at += 1
            return True
        return False

    def name(self) -> _Token:
        token = self.take()
        if token.kind != "word" or token.keyword in _KEYWORDS:
            raise self.fail(token)
        return token

    def field(self, token: _Token) -> Field:
        assert self.sobject is not None
        found = self.sobject.field(token.text)
        if found is None:
            raise ApiError(
                400, "INVALID_FIELD",
                f"\n{self.text}\n{' ' * token.column}^\nERROR at Row:1:Column:{token.column + 1}\n"
                f"No such column '{token.text}' on entity '{self.sobject.name}'. If you are attempting to use "
                "a custom field, be sure to append the '__c' after the custom field name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
            )
        return found

    def query(self) -> Query:
        self.expect("select")
        count = self.count()
        selected = [] if count else [self.name()]
        while not count and self.peek().text == ",":
            self.at += 1
            selected.append(self.name())
        self.expect("from")
        type_token = self.name()
        self.sobject = lookup_object(type_token.text)
        if self.sobject is None:
            raise ApiError(
                400, "INVALID_TYPE",
                f"\n{self.text}\n{' ' * type_token.column}^\nERROR at Row:1:Column:{type_token.column + 1}\n"
                f"sObject type '{type_token.text}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference your WSDL or "
                "the describe call for the appropriate names.",
            )
        fields = tuple(dict.fromkeys(self.field(t).name for t in selected))
        where = self.expression() if self.accept("where") else None
        order: list[tuple[str, bool]] = []
        if count and self.peek().keyword == "order":
            raise malformed_query("ORDER BY can't be used with COUNT(): use COUNT(fieldName) instead")
        if self.accept("order"):
            self.expect("by")
            order.append(self.order_item())
            while self.peek().text == ",":
                self.at += 1
                order.append(self.order_item())
        limit = None
        if self.accept("limit"):
            token = self.take()
            if token.kind != "number" or not token.text.isdigit():
                raise self.fail(token)
            limit = int(token.text)
        if self.peek().kind != "end":
            raise self.fail()
        return Query(self.sobject, fields, where, tuple(order), limit, count)

    def count(self) -> bool:
        """``COUNT()`` as the whole select list (it must be the only element)."""
        if self.peek().text.lower() != "count" or self.tokens[self.at + 1].text != "(":
            return False
        if self.tokens[self.at + 2].text != ")":
            # COUNT(fieldName) is an aggregate query, outside the emulator's SOQL subset.
            raise self.fail(self.tokens[self.at + 2])
        self.at += 3
        if self.peek().text == ",":
            raise self.fail()
        return True

    def order_item(self) -> tuple[str, bool]:
        name = self.field(self.name()).name
        descending = self.accept("desc")
        if not descending:
            self.accept("asc")
        return name, descending

    def expression(self) -> Predicate:
        # SOQL refuses to mix AND and OR at one level without parentheses, so there is no precedence.
        parts = [self.factor()]
        connector = ""
        while self.peek().keyword in ("and", "or"):
            if connector and self.peek().keyword != connector:
                raise self.fail()
            connector = self.take().keyword
            parts.append(self.factor())
        if len(parts) == 1:
            return parts[0]
        if connector == "and":
            return lambda r: all(p(r) for p in parts)
        return lambda r: any(p(r) for p in parts)

    def factor(self) -> Predicate:
        if self.accept("not"):
            inner = self.factor()
            return lambda r: not inner(r)
        if self.peek().text == "(":
            self.at += 1
            inner = self.expression()
            if self.take().text != ")":
                raise self.fail(self.tokens[self.at - 1])
            return inner
        return self.condition()

    def condition(self) -> Predicate:
        field = self.field(self.name())
        token = self.take()
        if token.kind == "op":
            return _compare(field, token.text, self.value(field))
        negate = token.keyword == "not"
        if negate:
            token = self.take()
        if token.keyword == "in":
            if self.take().text != "(":
                raise self.fail(self.tokens[self.at - 1])
            values = [self.value(field)]
            while self.peek().text == ",":
                self.at += 1
                values.append(self.value(field))
            if self.take().text != ")":
                raise self.fail(self.tokens[self.at - 1])
            keys = {_fold(v) for v in values}
            name = field.name
            if negate:
                return lambda r: _fold(r[name]) not in keys
            return lambda r: _fold(r[name]) in keys
        if token.keyword == "like" and not negate:
            pattern = self.take()
            if pattern.kind != "string":
                raise self.fail(pattern)
            return _like(field.name, pattern.text[1:-1])
        raise self.fail(token)

    def value(self, field: Field) -> Any:
        token = self.take()
        if token.keyword == "null":
            return None
        expected = _literal_kind(field)
        if token.kind == "string" and expected == "string":
            text = _unquote(token.text)
            return (to_18(text) or text) if field.type in ("id", "reference") else text
        if token.kind == expected == "number":
            return float(token.text)
        if token.kind == expected == "datetime":
            return format_epoch(parse_datetime(token.text) or 0.0)
        if token.kind == expected == "date" and parse_date(token.text):
            return token.text
        if expected == "boolean" and token.keyword in ("true", "false"):
            return token.keyword == "true"
        if token.kind in ("op", "punct", "end"):
            raise self.fail(token)
        quoted = "should" if expected == "string" else "should not"
        raise ApiError(
            400, "INVALID_FIELD",
            f"value of filter criterion for field '{field.name}' must be of type {field.type} "
            f"and {quoted} be enclosed in quotes",
        )


def _literal_kind(field: Field) -> str:
    if field.type in NUMBER_TYPES:
        return "number"
    if field.type in ("datetime", "date", "boolean"):
        return field.type
    return "string"


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal[1:-1])


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _compare(field: Field, op: str, value: Any) -> Predicate:
    name, key = field.name, _fold(value)
    if op == "=":
        return lambda r: _fold(r[name]) == key
    if op in ("!=", "<>"):
        return lambda r: _fold(r[name]) != key
    if value is None:
        return lambda r: False
    ordered: dict[str, Callable[[Any], bool]] = {
        "<": lambda v: v < key, "<=": lambda v: v <= key, ">": lambda v: v > key, ">=": lambda v: v >= key,
    }
    test = ordered[op]
    return lambda r: r[name] is not None and test(_fold(r[name]))


def _like(name: str, pattern: str) -> Predicate:
    parts = []
    for piece in re.split(r"(\\.|%|_)", pattern):
        if piece == "%":
            parts.append(".*")
        elif piece == "_":
            parts.append(".")
        else:
            parts.append(re.escape(_unquote(f"'{piece}'")))
    regex = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
    return lambda r: isinstance(r[name], str) and regex.fullmatch(r[name]) is not None


@functools.lru_cache(maxsize=1024)
def compile_query(text: str) -> Query:
    """The compiled query; raises ApiError MALFORMED_QUERY, INVALID_FIELD or INVALID_TYPE (400)."""
    return _Parser(text).query()
