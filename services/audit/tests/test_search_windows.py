"""Free text is read in windows of time that grow backwards from now (or from the
cursor, or from ``to``): whatever the windows, a search still returns every matching
entry once, newest first, across pages, for every kind of reader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_audit import handlers
from chancery_audit.handlers import FIRST_WINDOW, EntryFilter, _Search, _windows

ENTRIES = "/api/audit/v1/entries"
U1, U2, U3 = "unit-1", "unit-2", "unit-3"
#: how long ago each entry happened: inside the first window, at its edges, in each later
#: window, beyond the last one, and (a producer's clock ahead of ours) in the future
AGES = [timedelta(minutes=-5), timedelta(0), timedelta(minutes=1),
        FIRST_WINDOW - timedelta(seconds=1), FIRST_WINDOW, FIRST_WINDOW + timedelta(seconds=1),
        timedelta(days=2), timedelta(days=9),
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
def spread(record) -> list[tuple[datetime, str, str | None]]:
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

    assert pages(client, as_role("unit_admin", unit_ids=(U1, U2)), limit, q="needle") == expected


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


def test_windows_cover_the_range_exactly_newest_first():
    end = datetime(2026, 6, 1, tzinfo=UTC)
    for start in (None, end - timedelta(days=1), end - timedelta(days=365), end):
        search = _Search((), None, start, end, None, None, in_windows=True)
        windows = list(_windows(search, None))
        assert windows[0][1] == end and windows[-1][0] == start
        for (since, _), (_, until) in zip(windows, windows[1:], strict=False):
            assert since == until  # contiguous: no gap, no overlap
        assert all(since is None or until is None or since <= until for since, until in windows)


def test_a_plain_filter_is_one_range_and_free_text_starts_at_the_cursor():
    plain = _Search((), None, None, None, None, None, in_windows=False)
    assert list(_windows(plain, None)) == [(None, None)]

    cursor_at = datetime(2025, 1, 1, tzinfo=UTC)
    text = _Search((), None, None, None, None, None, in_windows=True)
    since, until = next(_windows(text, (cursor_at, "x")))
    assert until is None and since == cursor_at + timedelta(microseconds=1) - FIRST_WINDOW


def test_prepare_windows_only_free_text():
    from chancery_shared.auth.tokens import OPERATOR, Principal

    operator = Principal(user_id="op", email="op@x", name="Op", role=OPERATOR, account_id=None)
    assert handlers._prepare(operator, EntryFilter(text="x")).in_windows
    assert not handlers._prepare(operator, EntryFilter(user_id="u")).in_windows
