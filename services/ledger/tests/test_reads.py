"""Balance, transactions (newest first, cursor pages, time filters) and receipts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_ledger.model import Transfer
from sqlalchemy import update

from .conftest import order_event


def test_an_account_never_seen_has_zero_balances(login):
    assert login("finance").get("/balance").json == {
        "available_cents": 0, "reserved_cents": 0, "currency": "USD"}


def test_transactions_list_every_movement_newest_first_with_its_effect(login, consumer):
    admin = login("admin")
    deposit = admin.deposit_card(10_000).json
    consumer.handle(order_event("orders.order.approved", admin.account_id, "order-1",
                                price_cents=2_500))
    consumer.handle(order_event("ca_signer.certificate.issued", admin.account_id, "order-1"))
    items = admin.get("/transactions").json["items"]
    assert [i["type"] for i in items] == ["capture", "reservation", "deposit"]
    capture, reservation, credit = items
    assert credit["deposit_id"] == deposit["id"]
    assert (credit["available_change_cents"], credit["reserved_change_cents"]) == (10_000, 0)
    assert (reservation["available_change_cents"], reservation["reserved_change_cents"]) \
        == (-2_500, 2_500)
    assert (capture["available_change_cents"], capture["reserved_change_cents"]) == (0, -2_500)
    assert (capture["available_after_cents"], capture["reserved_after_cents"]) == (7_500, 0)
    assert capture["order_id"] == "order-1"
    assert all(i["amount_cents"] > 0 for i in items)
    assert capture["occurred_at"].endswith("Z")


def test_transactions_page_with_a_cursor_without_gaps_or_repeats(login):
    admin = login("admin")
    for cents in range(1, 8):
        admin.deposit_card(cents)
    seen, cursor = [], None
    while True:
        page = admin.get("/transactions", query_string={"limit": 3, **(
            {"cursor": cursor} if cursor else {})}).json
        assert len(page["items"]) <= 3
        seen += [i["amount_cents"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]


@pytest.mark.parametrize("query, field", [
    ({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"limit": "many"}, "limit"),
    ({"from": "yesterday"}, "from"), ({"to": "2026-01-01T00:00:00"}, "to"),  # no offset
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
])
def test_bad_transaction_queries_are_422_naming_the_parameter(login, query, field):
    response = login("admin").get("/transactions", query_string=query)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"], response.json


def test_transactions_filter_by_time_from_inclusive_to_exclusive(login, service):
    admin = login("admin")
    ids = [admin.deposit_card(cents).json["id"] for cents in (100, 200, 300)]
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with service.uow() as uow:  # back-date the movements (bypassing the append-only guard)
        for day, deposit_id in enumerate(ids):
            uow.session.execute(update(Transfer).where(Transfer.deposit_id == deposit_id)
                                .values(created_at=base + timedelta(days=day)))
        uow.commit()
    response = admin.get("/transactions", query_string={
        "from": "2026-03-02T12:00:00Z", "to": "2026-03-03T12:00:00Z"})
    assert [i["amount_cents"] for i in response.json["items"]] == [200]
    since = admin.get("/transactions", query_string={"from": "2026-03-02T13:00:00+01:00"})
    assert [i["amount_cents"] for i in since.json["items"]] == [300, 200]


def test_a_receipt_shows_the_payment_and_is_invisible_to_other_accounts(login):
    admin = login("admin", name="Alice Ng")
    deposit = admin.deposit_card(4_200, "5555 5555 5555 4444").json
    receipt = admin.get(f"/receipts/{deposit['receipt_id']}")
    assert receipt.status_code == 200
    body = receipt.json
    assert body["deposit_id"] == deposit["id"]
    assert body["amount_cents"] == 4_200 and body["currency"] == "USD"
    assert body["card"] == {"brand": "mastercard", "last4": "4444"}
    assert body["paid_by"]["name"] == "Alice Ng"
    assert body["number"].startswith("R-")
    assert login("admin").get(f"/receipts/{deposit['receipt_id']}").status_code == 404
    assert admin.get("/receipts/does-not-exist").status_code == 404


def test_a_receipt_prints_as_html_on_request(login):
    admin = login("finance", name="<script>Eve</script>")
    deposit = admin.deposit_card(4_200).json
    page = admin.get(f"/receipts/{deposit['receipt_id']}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "$42.00" in text and "Visa card ending 4242" in text
    assert "<script>" not in text  # names are escaped
