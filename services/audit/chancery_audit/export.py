"""The audit log as CSV, safe to open in a spreadsheet.

A cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return) is a
formula to Excel and LibreOffice; descriptions and names come from users, so such a
cell is written with a leading apostrophe and shows as the text it is (OWASP's
advice on CSV injection).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from chancery_shared.messaging.envelope import isoformat
from chancery_shared.web.csv_export import safe_cells, stream

from chancery_audit.model import AuditEntry, as_utc

COLUMNS = ("id", "at", "account_id", "user_id", "user_name", "ip", "service", "action",
           "target", "description", "correlation_id")


def row(entry: AuditEntry) -> list[str]:
    """One entry as CSV cells, in ``COLUMNS`` order."""
    return safe_cells(isoformat(as_utc(entry.at)) if column == "at" else getattr(entry, column)
                      for column in COLUMNS)


def lines(entries: Iterable[AuditEntry], *, flush_every: int = 100) -> Iterator[str]:
    """The header, then the entries, in chunks of ``flush_every`` rows (for streaming)."""
    return stream(COLUMNS, entries, row, flush_every=flush_every)
