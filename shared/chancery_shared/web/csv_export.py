"""CSV downloads that stream, and that a spreadsheet cannot be tricked into running.

Cells come from people (names, descriptions), so every one passes through
:func:`spreadsheet_safe`: a cell a spreadsheet would read as a formula gets a leading
``'`` (OWASP's advice against CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """``value``, made inert when a spreadsheet would read it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def safe_cells(values: Iterable[Any]) -> list[str]:
    """Values as CSV cells: ``None`` empty, everything text, nothing executable."""
    return [spreadsheet_safe("" if value is None else str(value)) for value in values]


def stream(header: Sequence[str], items: Iterable[T], row: Callable[[T], list[str]], *,
           flush_every: int = 100) -> Iterator[str]:
    """The header, then a row per item, yielded in chunks of ``flush_every`` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    pending = 0
    for item in items:
        writer.writerow(row(item))
        pending += 1
        if pending >= flush_every:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()
