"""Deposits: card payments through the processor port, purchase orders, validation."""

from __future__ import annotations

import copy

import pytest
from chancery_ledger.model import Deposit, Transfer
from chancery_ledger.payments import UNAVAILABLE_CARD
from chancery_ledger.schemas import MAX_DEPOSIT_CENTS
from sqlalchemy import func, select

from .conftest import VISA_DECLINED, VISA_NO_FUNDS, VISA_OK, card_deposit, outbox


def test_a_good_card_settles_at_once_credits_the_balance_and_issues_a_receipt(login, service):
    admin = login("admin")
    response = admin.deposit_card(12_345, "4242 4242 4242 4242")
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "settled"
    assert body["receipt_id"]
    assert body["amount_cents"] == 12_345
    assert body["method"] == "card"
    assert body["card"] == {"brand": "visa", "last4": "4242"}
    assert admin.get("/balance").json == {"available_cents": 12_345, "reserved_cents": 0,
                                          "currency": "USD"}
    (event,) = outbox(service, "ledger.deposit.settled")
    assert event["data"] == {"deposit_id": body["id"], "method": "card", "amount_cents": 12_345}
    assert event["account_id"] == admin.account_id
    assert event["actor"]["user_id"] == admin.user_id
    assert "deposited $123.45 by Visa card ending 4242" in event["summary"]


@pytest.mark.parametrize("number, code", [(VISA_DECLINED, "card_declined"),
                                          (VISA_NO_FUNDS, "insufficient_funds")])
def test_a_declined_card_is_recorded_but_moves_no_money(login, service, number, code):
    admin = login("finance")
    response = admin.deposit_card(5_000, number)
    assert response.status_code == 201
    body = response.json
    assert (body["status"], body["receipt_id"], body["decline_code"]) == ("declined", None, code)
    assert body["card"]["last4"] == number[-4:]
    assert admin.get("/balance").json["available_cents"] == 0
    assert admin.get("/transactions").json["items"] == []
    assert [e["data"]["deposit_id"] for e in outbox(service, "ledger.deposit.declined")] \
        == [body["id"]]
    assert outbox(service, "ledger.deposit.settled") == []
    with service.uow() as uow:
        assert uow.session.get(Deposit, body["id"]).status == "declined"


def test_a_processor_outage_answers_503_and_records_nothing(login, service):
    admin = login("admin")
    response = admin.deposit_card(5_000, UNAVAILABLE_CARD)
    assert response.status_code == 503
    assert response.json["code"] == "payment_processor_unavailable"
    with service.uow() as uow:
        assert uow.session.execute(select(func.count()).select_from(Deposit)).scalar_one() == 0
    assert outbox(service) == []


def test_a_purchase_order_waits_for_the_operator_then_credits_the_account(login, service):
    finance = login("finance")
    operator = login("operator", account_id=None, name="Olga Operator")
    created = finance.post("/deposits", {"method": "purchase_order", "amount_cents": 500_000,
                                         "po_number": "PO-2026-0042"})
    assert created.status_code == 201, created.json
    assert (created.json["status"], created.json["receipt_id"]) == ("pending", None)
    assert created.json["po_number"] == "PO-2026-0042"
    assert finance.get("/balance").json["available_cents"] == 0
    assert outbox(service, "ledger.deposit.pending")[0]["data"]["deposit_id"] \
        == created.json["id"]

    settled = operator.post(f"/deposits/{created.json['id']}/settle")
    assert settled.status_code == 200, settled.json
    assert settled.json["status"] == "settled"
    assert settled.json["receipt_id"]
    assert settled.json["settled_by"]["name"] == "Olga Operator"
    assert finance.get("/balance").json["available_cents"] == 500_000
    (event,) = outbox(service, "ledger.deposit.settled")
    assert event["account_id"] == finance.account_id  # the customer's, not the operator's None
    assert event["summary"].startswith("Olga Operator settled the $5,000.00 deposit")


def test_settling_twice_or_settling_a_card_deposit_is_a_conflict(login):
    admin = login("admin")
    operator = login("operator", account_id=None)
    po = admin.post("/deposits", {"method": "purchase_order", "amount_cents": 100,
                                  "po_number": "PO-1"}).json
    assert operator.post(f"/deposits/{po['id']}/settle").status_code == 200
    again = operator.post(f"/deposits/{po['id']}/settle")
    assert again.status_code == 409
    card = admin.deposit_card(100).json
    assert operator.post(f"/deposits/{card['id']}/settle").status_code == 409
    assert operator.post("/deposits/no-such-deposit/settle").status_code == 404
    assert admin.get("/balance").json["available_cents"] == 200


def test_the_operator_finds_pending_purchase_orders_of_every_account(login):
    first, second = login("admin"), login("finance")
    operator = login("operator", account_id=None)
    mine = first.post("/deposits", {"method": "purchase_order", "amount_cents": 100,
                                    "po_number": "A-1"}).json
    theirs = second.post("/deposits", {"method": "purchase_order", "amount_cents": 200,
                                       "po_number": "B-1"}).json
    second.deposit_card(300)
    pending = operator.get("/deposits?status=pending").json["items"]
    assert {d["id"] for d in pending} == {mine["id"], theirs["id"]}
    assert [d["id"] for d in first.get("/deposits").json["items"]] == [mine["id"]]
    assert first.get(f"/deposits/{theirs['id']}").status_code == 404


GOOD = card_deposit(1_000)


def _with(path: str, value):
    body = copy.deepcopy(GOOD)
    target = body
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return body


_DROP = object()


@pytest.mark.parametrize("body, field", [
    (_with("amount_cents", 0), "amount_cents"),
    (_with("amount_cents", -500), "amount_cents"),
    (_with("amount_cents", MAX_DEPOSIT_CENTS + 1), "amount_cents"),
    (_with("amount_cents", 10.5), "amount_cents"),
    (_with("amount_cents", "1000"), "amount_cents"),
    (_with("amount_cents", True), "amount_cents"),
    (_with("amount_cents", _DROP), "amount_cents"),
    (_with("method", "bitcoin"), "method"),
    (_with("method", _DROP), "method"),
    (_with("card", _DROP), "card"),
    (_with("card.number", "4242424242424241"), "card.number"),  # Luhn
    (_with("card.number", "4242-4242-abcd-4242"), "card.number"),
    (_with("card.number", "42424242"), "card.number"),
    (_with("card.number", 4242424242424242), "card.number"),
    (_with("card.exp_month", 13), "card.exp_month"),
    (_with("card.exp_month", 0), "card.exp_month"),
    (_with("card.exp_year", 2020), "card.exp_year"),
    (_with("card.cvc", "12"), "card.cvc"),
    (_with("card.cvc", "12345"), "card.cvc"),
    (_with("card.cvc", "12a"), "card.cvc"),
    (_with("card.cvc", _DROP), "card.cvc"),
    (_with("po_number", "PO-1"), "po_number"),
    ({"method": "purchase_order", "amount_cents": 100}, "po_number"),
    ({"method": "purchase_order", "amount_cents": 100, "po_number": ""}, "po_number"),
    ({"method": "purchase_order", "amount_cents": 100, "po_number": "x" * 65}, "po_number"),
    ({"method": "purchase_order", "amount_cents": 100, "po_number": "PO-1",
      "card": GOOD["card"]}, "card"),
])
def test_an_unacceptable_deposit_is_422_naming_the_field_and_writes_nothing(
        login, service, body, field):
    response = login("admin").post("/deposits", body)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert field in response.json["errors"], response.json
    with service.uow() as uow:
        assert uow.session.execute(select(func.count()).select_from(Deposit)).scalar_one() == 0
        assert uow.session.execute(select(func.count()).select_from(Transfer)).scalar_one() == 0


def test_a_card_that_expired_last_month_is_refused_on_the_month(login):
    from datetime import UTC, datetime

    today = datetime.now(UTC).date()
    if today.month == 1:
        pytest.skip("no earlier month in this year")
    body = card_deposit(100, exp_month=today.month - 1, exp_year=today.year)
    response = login("admin").post("/deposits", body)
    assert response.status_code == 422
    assert "card.exp_month" in response.json["errors"]
    this_month = card_deposit(100, exp_month=today.month, exp_year=today.year)
    assert login("admin").post("/deposits", this_month).json["status"] == "settled"


def test_a_retry_with_the_same_idempotency_key_charges_once(login, service):
    admin = login("admin")
    key = {"Idempotency-Key": "deposit-7f3a"}
    first = admin.deposit_card(2_500, headers=key)
    again = admin.deposit_card(2_500, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert admin.get("/balance").json["available_cents"] == 2_500
    assert len(outbox(service, "ledger.deposit.settled")) == 1
    different = admin.deposit_card(9_999, headers=key)
    assert different.status_code == 422
    assert "Idempotency-Key" in different.json["errors"]


def test_an_idempotency_key_is_freed_when_the_attempt_fails(login):
    admin = login("admin")
    key = {"Idempotency-Key": "retry-after-outage"}
    assert admin.deposit_card(700, UNAVAILABLE_CARD, headers=key).status_code == 503
    assert admin.deposit_card(700, UNAVAILABLE_CARD, headers=key).status_code == 503
    other = login("admin")
    assert other.deposit_card(700, VISA_OK, headers=key).status_code == 201  # keys are per user
