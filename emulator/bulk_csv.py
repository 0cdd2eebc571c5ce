"""Bulk API 2.0 CSV: reading job data the way Salesforce does, and writing result files.

Salesforce reads RFC 4180 CSV with the job's column delimiter and line ending: double quotes around values
that hold the delimiter, a line ending or a quote, ``""`` for a quote inside them, values never trimmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["DELIMITERS", "LINE_ENDINGS", "CsvError", "CsvRow", "read_csv", "write_csv"]

DELIMITERS = {"BACKQUOTE": "`", "CARET": "^", "COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "TAB": "\t"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
_PARSE = "InvalidBatch : Failed to parse CSV."
_UNESCAPED = f"{_PARSE} Found unescaped quote. A value with quote should be within a quote"


class CsvError(Exception):
    """Data Salesforce cannot read at all; the message is the failed job's ``errorMessage``."""


@dataclass(frozen=True)
class CsvRow:
    """One data row: its values, or the reason Salesforce could not read it (the row then fails alone)."""

    values: list[str]
    error: str | None = None


def read_csv(text: str, column_delimiter: str, line_ending: str) -> tuple[list[str], list[CsvRow]]:
    """The header and the rows of one upload (``column_delimiter``/``line_ending`` are the job's names).

    A header that cannot be read, or a line ending other than the job's, raises CsvError: Salesforce fails
    the whole job. A data row with a stray quote or the wrong number of values fails on its own.
    """
    records = _records(text, DELIMITERS[column_delimiter], LINE_ENDINGS[line_ending], line_ending)
    header: list[str] | None = None
    rows: list[CsvRow] = []
    for values, error in records:
        if header is None:
            if error is not None:
                raise CsvError(error)
            header = values
        elif error is not None:
            rows.append(CsvRow(values, error))
        elif len(values) != len(header):
            rows.append(CsvRow(values, f"{_PARSE} Wrong number of columns: the header has {len(header)}, "
                                       f"this row has {len(values)}"))
        else:
            rows.append(CsvRow(values))
    return header or [], rows


def _records(text: str, sep: str, eol: str, eol_name: str) -> Iterator[tuple[list[str], str | None]]:
    # The other line ending's telltale character outside quotes means the file does not match the job.
    stray = "\r" if eol == "\n" else "\n"
    position = 0
    while position < len(text):
        values: list[str] = []
        error: str | None = None
        while True:
            read = _quoted if text.startswith('"', position) else _plain
            value, position, problem = read(text, position, sep, eol)
            if (read is _plain and stray in value) or text.startswith(stray, position):
                raise CsvError(f"ClientInputError : LineEnding is invalid on user data. Current LineEnding "
                               f"setting is {eol_name}")
            values.append(value)
            error = error or problem
            if not text.startswith(sep, position):
                break
            position += len(sep)
        position += len(eol) if text.startswith(eol, position) else 0
        # Blank lines carry no record.
        if values != [""] or error is not None:
            yield values, error


def _next_boundary(text: str, start: int, sep: str, eol: str) -> int:
    ends = [i for i in (text.find(sep, start), text.find(eol, start)) if i >= 0]
    return min(ends, default=len(text))


def _plain(text: str, start: int, sep: str, eol: str) -> tuple[str, int, str | None]:
    end = _next_boundary(text, start, sep, eol)
    value = text[start:end]
    return value, end, _UNESCAPED if '"' in value else None


def _quoted(text: str, start: int, sep: str, eol: str) -> tuple[str, int, str | None]:
    parts: list[str] = []
    position = start + 1
    while True:
        close = text.find('"', position)
        if close < 0:
            return "".join(parts) + text[position:], len(text), \
                f"{_PARSE} EOF reached before closing an opened quote"
        parts.append(text[position:close])
        position = close + 1
        if not text.startswith('"', position):
            break
        parts.append('"')
        position += 1
    if position == len(text) or text.startswith((sep, eol), position):
        return "".join(parts), position, None
    # Anything between a closing quote and the next delimiter makes the value unreadable: skip it.
    return "".join(parts), _next_boundary(text, position, sep, eol), _UNESCAPED


def write_csv(header: Iterable[str], rows: Iterable[Iterable[str]], column_delimiter: str,
              line_ending: str) -> bytes:
    """A result file: every value quoted, as Salesforce writes them."""
    sep, eol = DELIMITERS[column_delimiter], LINE_ENDINGS[line_ending]
    lines = (sep.join('"' + value.replace('"', '""') + '"' for value in row) for row in (header, *rows))
    return "".join(line + eol for line in lines).encode()
