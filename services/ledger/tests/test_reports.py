"""Finance reports: spend by unit, product and month, and the transactions statement."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from chancery_ledger import reports
from chancery_ledger.model import Transfer
from sqlalchemy import update

from .conftest import order_event

APPROVED, ISSUED = "orders.order.approved", "ca_signer.certificate.issued"
REJECTED, REFUNDED = "orders.order.rejected", "orders.order.refunded"
FORMULA = '=HYPERLINK("http://evil.example","click")'
MARCH = {"from": "2026-03-01", "to": "2026-04-30"}


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")


def back_date(service, when: datetime, **where: str) -> None:
    """Move the matching transfers to ``when`` (a bulk UPDATE skips the append-only guard)."""
    conditions = [getattr(Transfer, column) == value for column, value in where.items()]
    with service.uow() as uow:
        assert uow.session.execute(update(Transfer).where(*conditions)
                                   .values(created_at=when)).rowcount >= 1
        uow.commit()


def charge(consumer, service, customer, order_id: str, cents: int, *, day: str,
           unit_id: str | None, product: str) -> None:
    """An order approved, reserved and captured (its certificate issued) on ``day``."""
    consumer.handle(order_event(APPROVED, customer.account_id, order_id, price_cents=cents,
                                unit_id=unit_id, product=product))
    consumer.handle(order_event(ISSUED, customer.account_id, order_id))
    back_date(service, at(day, 9), order_id=order_id, kind="reservation")
    back_date(service, at(day), order_id=order_id, kind="capture")


@pytest.fixture
def books(login, consumer, service):
    """Four captured orders in March and April 2026, one refunded in April, and money
    that moved without being spent: a released hold and a refund of a price never
    captured."""
    admin = login("admin")
    deposit = admin.deposit_card(100_000).json
    back_date(service, at("2026-02-27"), deposit_id=deposit["id"])
    charge(consumer, service, admin, "o-1", 3_000, day="2026-03-02", unit_id="unit-a",
           product="ssl_plus")
    charge(consumer, service, admin, "o-2", 5_000, day="2026-03-15", unit_id="unit-b",
           product="wildcard")
    charge(consumer, service, admin, "o-3", 2_000, day="2026-03-31", unit_id="unit-a",
           product="wildcard")
    charge(consumer, service, admin, "o-4", 1_000, day="2026-04-03", unit_id=None,
           product=FORMULA)
    consumer.handle(order_event(REFUNDED, admin.account_id, "o-2", amount_cents=5_000,
                                note="duplicate"))
    back_date(service, at("2026-04-10"), order_id="o-2", kind="refund")
    # held, then released: no spend
    consumer.handle(order_event(APPROVED, admin.account_id, "o-5", price_cents=700,
                                unit_id="unit-a", product="ssl_plus"))
    consumer.handle(order_event(REJECTED, admin.account_id, "o-5"))
    back_date(service, at("2026-04-11"), order_id="o-5")
    # held, then refunded before any capture: no spend either
    consumer.handle(order_event(APPROVED, admin.account_id, "o-6", price_cents=900,
                                unit_id="unit-b", product="wildcard"))
    consumer.handle(order_event(REFUNDED, admin.account_id, "o-6", amount_cents=900,
                                note=None))
    back_date(service, at("2026-04-12"), order_id="o-6")
    return admin


def spend(caller, **query: str):
    response = caller.get("/reports/spend", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def rows_of(report: dict) -> list[tuple]:
    return [(r["key"], r["orders"], r["spent_cents"]) for r in report["rows"]]


# --- spend -------------------------------------------------------------------------------


def test_spend_by_month_counts_captures_and_a_refund_in_the_month_it_happened(books):
    report = spend(books, **MARCH, group_by="month")
    assert rows_of(report) == [("2026-03", 3, 10_000), ("2026-04", 1, -4_000)]
    assert [r["label"] for r in report["rows"]] == ["March 2026", "April 2026"]
    assert report["total_cents"] == 6_000
    assert (report["from"], report["to"]) == ("2026-03-01T00:00:00Z", "2026-05-01T00:00:00Z")
    assert (report["group_by"], report["currency"]) == ("month", "USD")


def test_spend_by_unit_nets_the_refund_against_its_unit(books):
    report = spend(books, **MARCH, group_by="unit")
    assert rows_of(report) == [("unit-a", 2, 5_000), (None, 1, 1_000), ("unit-b", 1, 0)]
    assert report["rows"][1]["label"] == "No business unit"
    assert report["total_cents"] == 6_000


def test_spend_by_product(books):
    report = spend(books, **MARCH, group_by="product")
    assert rows_of(report) == [("ssl_plus", 1, 3_000), ("wildcard", 2, 2_000),
                               (FORMULA, 1, 1_000)]


def test_spend_counts_only_what_happened_within_the_period(books):
    march = spend(books, **{"from": "2026-03-01", "to": "2026-03-31"}, group_by="unit")
    assert rows_of(march) == [("unit-a", 2, 5_000), ("unit-b", 1, 5_000)]
    refund_day = spend(books, **{"from": "2026-04-10T00:00:00Z",
                                 "to": "2026-04-10T12:00:00+00:00"}, group_by="product")
    assert rows_of(refund_day) == []  # the refund was at noon: `to` is exclusive
    with_refund = spend(books, **{"from": "2026-04-10", "to": "2026-04-10"}, group_by="unit")
    assert rows_of(with_refund) == [("unit-b", 0, -5_000)]


def test_every_month_of_the_period_has_a_row_even_without_spend(books):
    report = spend(books, **{"from": "2026-01-15", "to": "2026-03-01"}, group_by="month")
    assert rows_of(report) == [("2026-01", 0, 0), ("2026-02", 0, 0), ("2026-03", 0, 0)]


def test_another_accounts_spend_is_not_in_the_report(books, login):
    stranger = login("admin")
    assert spend(stranger, **MARCH, group_by="unit") == {
        "from": "2026-03-01T00:00:00Z", "to": "2026-05-01T00:00:00Z", "group_by": "unit",
        "currency": "USD", "rows": [], "total_cents": 0}


def test_spend_downloads_as_csv_with_formula_safe_cells(books):
    response = books.get("/reports/spend", query_string={**MARCH, "group_by": "product"},
                         headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table == [
        ["key", "label", "orders", "spent_cents", "spent_usd"],
        ["ssl_plus", "", "1", "3000", "30.00"],
        ["wildcard", "", "2", "2000", "20.00"],
        ["'" + FORMULA, "", "1", "1000", "10.00"],
    ]


def test_negative_spend_is_written_as_a_number_not_a_formula(books):
    response = books.get("/reports/spend", query_string={**MARCH, "group_by": "month"},
                         headers={"Accept": "text/csv"})
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[2] == ["2026-04", "April 2026", "1", "'-4000", "'-40.00"]


# --- the transactions statement ----------------------------------------------------------


def test_the_statement_lists_every_movement_of_the_period_oldest_first(books):
    response = books.get("/reports/transactions", query_string={
        "from": "2026-03-01", "to": "2026-03-31"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = json.loads(response.get_data(as_text=True))
    assert (body["from"], body["to"], body["currency"]) == (
        "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "USD")
    assert [(i["type"], i["order_id"], i["amount_cents"]) for i in body["items"]] == [
        ("reservation", "o-1", 3_000), ("capture", "o-1", 3_000),
        ("reservation", "o-2", 5_000), ("capture", "o-2", 5_000),
        ("reservation", "o-3", 2_000), ("capture", "o-3", 2_000)]
    first = body["items"][0]
    assert (first["available_change_cents"], first["reserved_change_cents"]) == (-3_000, 3_000)
    assert first["occurred_at"] == "2026-03-02T09:00:00Z"


def test_the_statement_downloads_as_csv_with_formula_safe_cells(login, consumer):
    admin = login("admin")
    admin.deposit_card(10_000)
    consumer.handle(order_event(APPROVED, admin.account_id, "=1+2", price_cents=1_500))
    response = admin.get("/reports/transactions", headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    header, deposit, reservation = csv.reader(io.StringIO(response.get_data(as_text=True)))
    assert header == list(reports.TRANSACTION_COLUMNS)
    assert (deposit[2], deposit[3], deposit[4]) == ("deposit", "10000", "10000")
    assert (reservation[2], reservation[3], reservation[4]) == ("reservation", "1500", "'-1500")
    assert reservation[header.index("order_id")] == "'=1+2"


def test_the_statement_reads_in_batches_without_gaps_or_repeats(login, service):
    admin = login("admin")
    for cents in range(1, 8):
        admin.deposit_card(cents)
    with service.uow() as uow:  # one instant for all: the id breaks the tie
        uow.session.execute(update(Transfer).values(created_at=at("2026-03-05")))
        uow.commit()
    period = reports.period_of(at("2026-03-01"), at("2026-04-01"))
    lines = list(reports.transaction_lines(service.uow, admin.account_id, period,
                                           batch_size=3))
    assert sorted(line["amount_cents"] for line in lines) == [1, 2, 3, 4, 5, 6, 7]
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)


# --- parameters and roles ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/reports/spend", "/reports/transactions"])
@pytest.mark.parametrize("query, field", [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-02-30"}, "from"),
    ({"to": "2026-13-01"}, "to"),
    ({"to": "2026-03-01T00:00:00"}, "to"),  # a time without an offset
    ({"from": "2026-03-02", "to": "2026-03-01"}, "to"),
    ({"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T09:00:00Z"}, "to"),
    ({"from": "2025-01-01", "to": "2026-01-02"}, "to"),  # 367 days
])
def test_bad_periods_are_422_naming_the_parameter(login, path, query, field):
    response = login("finance").get(path, query_string=query)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"], response.json


@pytest.mark.parametrize("group_by", ["team", "", "MONTH"])
def test_an_unknown_grouping_is_422_naming_group_by(login, group_by):
    response = login("admin").get("/reports/spend", query_string={"group_by": group_by})
    assert response.status_code == 422
    assert "group_by" in response.json["errors"]


def test_a_leap_year_fits_in_one_report(login):
    response = login("admin").get("/reports/spend", query_string={
        "from": "2024-01-01", "to": "2024-12-31", "group_by": "month"})
    assert response.status_code == 200, response.json
    assert len(response.json["rows"]) == 12


@pytest.mark.parametrize("today, expected", [
    (datetime(2026, 3, 17, 8, tzinfo=UTC), ("2026-03-01", "2026-03-18")),
    (datetime(2026, 12, 31, 23, tzinfo=UTC), ("2026-12-01", "2027-01-01")),
])
def test_the_period_defaults_to_this_month_so_far(today, expected):
    period = reports.period_of(None, None, now=today)
    assert (period.start.date().isoformat(), period.end.date().isoformat()) == expected


@pytest.mark.parametrize("path", ["/reports/spend", "/reports/transactions"])
@pytest.mark.parametrize("role", ["limited", "unit_admin", "operator"])
def test_roles_without_finance_may_not_read_reports(login, path, role):
    response = login(role, account_id=None if role == "operator" else "__new__").get(path)
    assert response.status_code == 403
    assert response.json["missing_permission"] == "view_finance"
