"""The audit log as CSV, safe to open in a spreadsheet.

A cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return) is a
formula to Excel and LibreOffice; descriptions and names come from users, so such a
cell is written with a leading apostrophe and shows as the text it is (OWASP's
advice on CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from chancery_shared.messaging.envelope import isoformat

from chancery_audit.model import AuditEntry, as_utc

COLUMNS = ("id", "at", "account_id", "user_id", "user_name", "ip", "service", "action",
           "target", "description", "correlation_id")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """``value``, made inert when a spreadsheet would read it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def row(entry: AuditEntry) -> list[str]:
    """One entry as CSV cells, in ``COLUMNS`` order."""
    cells = []
    for column in COLUMNS:
        value = isoformat(as_utc(entry.at)) if column == "at" else getattr(entry, column)
        cells.append("" if value is None else spreadsheet_safe(str(value)))
    return cells


def lines(entries: Iterable[AuditEntry], *, flush_every: int = 100) -> Iterator[str]:
    """The header, then the entries, in chunks of ``flush_every`` rows (for streaming)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    pending = 0
    for entry in entries:
        writer.writerow(row(entry))
        pending += 1
        if pending >= flush_every:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()
