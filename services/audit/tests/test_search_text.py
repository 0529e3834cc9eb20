"""Free text is looked for among the newest entries first, then among more of them,
then through the trigram index in the older rest: wherever those boundaries fall
(RECENT_SCAN and WIDER_SCAN, made small here),
a search returns every matching entry once, newest first, across pages, for every
kind of reader; and a unit administrator's plain filters read the units' own rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_audit import handlers
from chancery_audit.handlers import EntryFilter

ENTRIES = "/api/audit/v1/entries"
U1, U2, U3 = "unit-1", "unit-2", "unit-3"
#: how long ago each entry happened (one of them in the future: a producer's clock ahead)
AGES = [timedelta(minutes=-5), timedelta(0), timedelta(minutes=1), timedelta(hours=23),
        timedelta(days=1), timedelta(days=1, seconds=1), timedelta(days=2), timedelta(days=9),
        timedelta(days=40), timedelta(days=200), timedelta(days=700), timedelta(days=3000),
        timedelta(days=9000), timedelta(days=20000)]


def pages(client, headers, limit: int, **params: str) -> list[str]:
    seen, cursor = [], None
    for _ in range(100):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(ENTRIES, query_string=query, headers=headers)
        assert response.status_code == 200, response.json
        seen += [item["description"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


@pytest.fixture
def audit(audit_on_each_database):
    """Each test on SQLite and on PostgreSQL."""
    return audit_on_each_database


@pytest.fixture(params=[(1, 5_000), (2, 2), (3, 5_000), (7, 10), (5_000, 5_000)],
                ids=lambda n: f"scan{n[0]}-wider{n[1]}")
def scan(request, monkeypatch) -> tuple[int, int]:
    """How many of the newest entries are looked at first, and at most how many more
    before the index is asked."""
    recent, wider = request.param
    monkeypatch.setattr(handlers, "RECENT_SCAN", recent)
    monkeypatch.setattr(handlers, "WIDER_SCAN", wider)
    monkeypatch.setattr(handlers, "WIDER_SCAN_OF_TEXT_ROWS", wider)
    return request.param


@pytest.fixture
def spread(record, scan) -> list[tuple[datetime, str, str | None]]:
    """A matching entry at each age (and a non-matching one beside it), units in turn."""
    now = datetime.now(UTC)
    made = []
    for n, age in enumerate(AGES):
        at = now - age
        unit = (U1, U2, U3, None)[n % 4]
        data = {"order_id": f"o-{n}", "price_cents": 100, "unit_id": unit}
        record(at=at, summary=f"needle {n}", data=data)
        record(at=at, summary=f"hay {n}", data={**data, "order_id": f"h-{n}"})
        made.append((at, f"needle {n}", unit))
    return made


@pytest.mark.parametrize("limit", [1, 2, 5, 50])
def test_free_text_pages_hold_every_match_once_newest_first(spread, client, as_role, limit):
    expected = [label for _, label, _ in sorted(spread, reverse=True)]

    assert pages(client, as_role("admin"), limit, q="needle") == expected
    assert pages(client, as_role("operator"), limit, q="needle") == expected


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_a_unit_administrator_finds_free_text_in_their_units_only(spread, client, as_role,
                                                                   limit):
    expected = [label for _, label, unit in sorted(spread, reverse=True) if unit in (U1, U2)]

    headers = as_role("unit_admin", unit_ids=(U1, U2))
    assert pages(client, headers, limit, q="needle") == expected
    # with a filter on the entry too (every needle is Alice's)
    assert pages(client, headers, limit, q="needle", user_id="user-alice") == expected
    assert pages(client, headers, limit, q="needle", user_id="user-bob") == []
    assert pages(client, headers, limit, q="needle", action="orders.order.approved") == expected
    assert pages(client, headers, limit, q="needle", action="ledger") == []


def test_free_text_within_a_time_range(spread, client, as_role):
    now = datetime.now(UTC)
    since, until = now - timedelta(days=300), now - timedelta(days=1)
    expected = [label for at, label, _ in sorted(spread, reverse=True) if since <= at < until]
    assert len(expected) >= 3

    found = pages(client, as_role("admin"), 2, q="needle",
                  **{"from": since.isoformat(), "to": until.isoformat()})

    assert found == expected


def test_a_unit_administrator_time_range_and_action_read_their_unit_rows(record, client,
                                                                         as_role):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for day, type_, unit in ((1, "orders.order.approved", U1),
                             (2, "orders.order.rejected", U1),
                             (3, "orders.order.approved", U2),
                             (4, "orders.order.approved", U3),
                             (40, "orders.order.approved", U1)):
        data = {"order_id": f"o-{day}", "unit_id": unit, "price_cents": 100}
        if type_ == "orders.order.rejected":
            data = {"order_id": f"o-{day}", "unit_id": unit, "reason": "no"}
        record(type_=type_, at=start + timedelta(days=day), summary=f"day {day}", data=data)
    headers = as_role("unit_admin", unit_ids=(U1, U2))
    march = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}

    assert pages(client, headers, 1, **march) == ["day 3", "day 2", "day 1"]
    assert pages(client, headers, 1, action="orders.order.approved") == [
        "day 40", "day 3", "day 1"]
    assert pages(client, headers, 2, action="orders.order.approved", **march) == [
        "day 3", "day 1"]


def test_a_unit_administrator_reads_unit_rows_only_for_time_and_action():
    from chancery_shared.auth.tokens import Principal

    unit_admin = Principal(user_id="ua", email="ua@x", name="Ua", role="unit_admin",
                           account_id="acct", unit_ids=(U2, U1))
    for plain in (EntryFilter(), EntryFilter(action="orders", start=datetime(2026, 1, 1,
                                                                             tzinfo=UTC))):
        prepared = handlers._prepare(unit_admin, plain)
        assert prepared.by_unit_rows and prepared.units == (U1, U2)
    for entry_filter in (EntryFilter(user_id="u"), EntryFilter(target="order"),
                         EntryFilter(text="x")):
        assert not handlers._prepare(unit_admin, entry_filter).by_unit_rows


@pytest.mark.parametrize("params", [{}, {"q": "needle"}, {"action": "orders"},
                                    {"user_id": "user-alice"}])
def test_a_unit_administrator_of_no_unit_reads_nothing(spread, client, as_role, params):
    assert pages(client, as_role("unit_admin", unit_ids=()), 3, **params) == []
    assert pages(client, as_role("unit_admin", unit_ids=(U3,)), 3, **params) != []
