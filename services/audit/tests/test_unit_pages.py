"""A unit administrator's pages are read unit by unit and merged: nothing twice, nothing
missed, newest first, whatever the page size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

U1, U2, U3 = "unit-1", "unit-2", "unit-3"
START = datetime(2026, 11, 1, tzinfo=UTC)
#: (minutes after START, units named by the message)
ENTRIES = [(1, [U1]), (2, [U2]), (3, [U1, U2]), (4, [U3]), (5, []), (6, [U2]), (7, [U1]),
           (8, [U1, U3]), (9, [U3]), (10, [U2])]


@pytest.mark.parametrize("limit", [1, 2, 3, 50])
def test_pages_of_two_units_hold_each_visible_entry_once_newest_first(record, client, as_role,
                                                                      limit):
    for minutes, units in ENTRIES:
        record(at=START + timedelta(minutes=minutes), summary=f"minute {minutes}",
               type_="orders.order.assignees_changed",
               data={"order_id": f"o-{minutes}", "user_ids": [], "unit_ids": units})
    headers = as_role("unit_admin", unit_ids=(U1, U2))
    seen, cursor = [], None
    for _ in range(20):
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/audit/v1/entries", query_string=query, headers=headers).json
        seen += [item["description"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    expected = [f"minute {m}" for m, units in reversed(ENTRIES) if {U1, U2} & set(units)]
    assert seen == expected


def test_a_filter_applies_within_the_units(record, client, as_role):
    for order_id, type_, unit in (("a", "orders.order.approved", U1),
                                  ("b", "orders.order.awaiting_funds", U1),
                                  ("c", "orders.order.approved", U3)):
        record(type_=type_, data={"order_id": order_id, "price_cents": 100, "unit_id": unit})

    page = client.get("/api/audit/v1/entries", query_string={"action": "orders.order.approved"},
                      headers=as_role("unit_admin", unit_ids=(U1,))).json

    assert [item["target"] for item in page["items"]] == ["order:a"]
