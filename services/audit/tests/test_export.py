"""The CSV download: the same search, every match, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from chancery_audit import export, handlers

CSV = "/api/audit/v1/entries.csv"


def rows_of(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_the_download_is_a_csv_file_with_a_header_row(client, as_role, record):
    record(summary="Alice Ng approved order o1", subject=("order", "o1"),
           at=datetime(2026, 1, 11, 8, tzinfo=UTC),
           data={"order_id": "o1", "price_cents": 100, "unit_id": None})

    response = client.get(CSV, headers=as_role("admin"))

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.get_data(as_text=True).splitlines()[0] == ",".join(export.COLUMNS)
    [row] = rows_of(response)
    assert {k: row[k] for k in ("at", "user_name", "ip", "service", "action", "target",
                                "description")} == {
        "at": "2026-01-11T08:00:00Z", "user_name": "Alice Ng", "ip": "203.0.113.7",
        "service": "orders", "action": "orders.order.approved", "target": "order:o1",
        "description": "Alice Ng approved order o1"}


def test_the_download_applies_the_search_and_keeps_its_order(client, as_role, record):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(6):
        record("orders.order.approved" if n % 2 else "ledger.balance.low",
               at=start + timedelta(hours=n), summary=f"step {n}",
               data={"order_id": f"o{n}", "price_cents": 1, "unit_id": None} if n % 2
               else {"available_cents": 1, "threshold_cents": 2})
    headers = as_role("admin")

    rows = rows_of(client.get(CSV, query_string={"action": "orders.order"}, headers=headers))
    listed = client.get("/api/audit/v1/entries", query_string={"action": "orders.order"},
                        headers=headers).json["items"]

    assert [row["description"] for row in rows] == ["step 5", "step 3", "step 1"]
    assert [row["id"] for row in rows] == [item["id"] for item in listed]


def test_a_download_larger_than_a_batch_holds_every_entry_once(client, as_role, record,
                                                               monkeypatch):
    monkeypatch.setattr(handlers, "EXPORT_BATCH_SIZE", 3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(10):
        record(at=start + timedelta(minutes=n // 2), summary=f"step {n}")

    rows = rows_of(client.get(CSV, headers=as_role("admin")))

    assert len(rows) == len({row["id"] for row in rows}) == 10
    assert [row["at"] for row in rows] == sorted((row["at"] for row in rows), reverse=True)


@pytest.mark.parametrize(("text", "cell"), [
    ('=HYPERLINK("http://evil.example","click")', '\'=HYPERLINK("http://evil.example","click")'),
    ("+1+2", "'+1+2"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1", "'\t=1"),
    ("Alice approved order o1", "Alice approved order o1"),
    ("a=1", "a=1"),
])
def test_cells_a_spreadsheet_would_run_as_formulas_are_made_text(text, cell, client, as_role,
                                                                  record):
    record(summary=text, user=("user-x", text))

    [row] = rows_of(client.get(CSV, headers=as_role("admin")))

    assert row["description"] == cell
    assert row["user_name"] == cell


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "last tuesday"}, "from"),
    ({"to": "2026-01-01"}, "to"),
])
def test_a_malformed_time_is_refused_before_anything_is_sent(params, field, client, as_role):
    response = client.get(CSV, query_string=params, headers=as_role("admin"))

    assert response.status_code == 422
    assert list(response.json["errors"]) == [field]
