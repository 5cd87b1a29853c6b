"""CSV exports of study data: one writer, with spreadsheet-formula neutralisation, for every kind of study."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV injection advice).

    A cell that already starts with an apostrophe gets one too, so :func:`csv_uncell` undoes it exactly.
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_uncell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def csv_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV document (CRLF line ends, as RFC 4180 asks). Free text must already be passed through
    :func:`csv_cell`; numbers and ids go as they are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()
