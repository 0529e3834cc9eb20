"""Bad input through the HTTP API: a 4xx problem naming the field, and nothing written.

Each case starts from an account that already holds money, sends one bad deposit, and
checks that no deposit, transfer, receipt or outbox message appeared and the balance
did not move. A card number is never echoed back in the problem.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from chancery_ledger.model import Deposit, Receipt, Transfer
from chancery_ledger.schemas import MAX_DEPOSIT_CENTS
from sqlalchemy import func, select

from .conftest import VISA_OK, card_deposit, outbox

OPENING_BALANCE = 5_000
GOOD_CARD = card_deposit(1_000)
GOOD_PO = {"method": "purchase_order", "amount_cents": 1_000, "po_number": "PO-2026-17"}
_DROP = object()


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``base`` with the field at dotted ``path`` set to ``value`` (or dropped)."""
    body = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target[part]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return body


def _last_month() -> tuple[int, int, str]:
    """(exp_month, exp_year, field blamed) of a card that expired at the end of last month."""
    today = datetime.now(UTC).date()
    if today.month == 1:
        return 12, today.year - 1, "card.exp_year"
    return today.month - 1, today.year, "card.exp_month"


LAST_MONTH, LAST_MONTHS_YEAR, EXPIRED_FIELD = _last_month()

AMOUNTS = {
    "negative": -500, "zero": 0, "fractional": 12.5, "fractional looking whole": 1000.0,
    "string": "1000", "words": "ten dollars", "true": True, "false": False, "null": None,
    "absurd": 10**15, "one cent over the maximum": MAX_DEPOSIT_CENTS + 1,
    "a list": [1000], "missing": _DROP,
}
CASES: dict[str, tuple[dict[str, Any], str]] = {
    **{f"card amount {name}": (_with(GOOD_CARD, "amount_cents", value), "amount_cents")
       for name, value in AMOUNTS.items()},
    **{f"purchase order amount {name}": (_with(GOOD_PO, "amount_cents", value), "amount_cents")
       for name, value in AMOUNTS.items()},
    "card number failing Luhn": (_with(GOOD_CARD, "card.number", "4242424242424241"),
                                 "card.number"),
    "card number with letters": (_with(GOOD_CARD, "card.number", "4242abcd42424242"),
                                 "card.number"),
    "card number too short": (_with(GOOD_CARD, "card.number", "42424242424"), "card.number"),
    "card number too long": (_with(GOOD_CARD, "card.number", "4" * 19 + "2"), "card.number"),
    "card number empty": (_with(GOOD_CARD, "card.number", ""), "card.number"),
    "card number as a number": (_with(GOOD_CARD, "card.number", 4242424242424242),
                                "card.number"),
    "card number missing": (_with(GOOD_CARD, "card.number", _DROP), "card.number"),
    "card expired last month": (_with(_with(GOOD_CARD, "card.exp_month", LAST_MONTH),
                                      "card.exp_year", LAST_MONTHS_YEAR), EXPIRED_FIELD),
    "card expired years ago": (_with(GOOD_CARD, "card.exp_year", 2020), "card.exp_year"),
    "exp_month 13": (_with(GOOD_CARD, "card.exp_month", 13), "card.exp_month"),
    "exp_month 0": (_with(GOOD_CARD, "card.exp_month", 0), "card.exp_month"),
    "exp_month as a string": (_with(GOOD_CARD, "card.exp_month", "12"), "card.exp_month"),
    "exp_year of two digits": (_with(GOOD_CARD, "card.exp_year", 30), "card.exp_year"),
    "CVC too short": (_with(GOOD_CARD, "card.cvc", "12"), "card.cvc"),
    "CVC too long": (_with(GOOD_CARD, "card.cvc", "12345"), "card.cvc"),
    "CVC with a letter": (_with(GOOD_CARD, "card.cvc", "12a"), "card.cvc"),
    "CVC missing": (_with(GOOD_CARD, "card.cvc", _DROP), "card.cvc"),
    "card missing": (_with(GOOD_CARD, "card", _DROP), "card"),
    "card not an object": (_with(GOOD_CARD, "card", VISA_OK), "card"),
    "method unknown": (_with(GOOD_CARD, "method", "bitcoin"), "method"),
    "method missing": (_with(GOOD_CARD, "method", _DROP), "method"),
    "PO number empty": (_with(GOOD_PO, "po_number", ""), "po_number"),
    "PO number too long": (_with(GOOD_PO, "po_number", "P" * 65), "po_number"),
    "PO number blank": (_with(GOOD_PO, "po_number", "   "), "po_number"),
    "PO number with markup": (_with(GOOD_PO, "po_number", "<b>PO</b>"), "po_number"),
    "PO number missing": (_with(GOOD_PO, "po_number", _DROP), "po_number"),
    "PO with a card": ({**GOOD_PO, "card": GOOD_CARD["card"]}, "card"),
    "card with a PO number": ({**GOOD_CARD, "po_number": "PO-1"}, "po_number"),
}


def _what_is_written(service, account) -> dict[str, Any]:
    with service.uow() as uow:
        def count(model) -> int:
            return uow.session.execute(select(func.count()).select_from(model)).scalar_one()

        written = {"deposits": count(Deposit), "transfers": count(Transfer),
                   "receipts": count(Receipt)}
    return {**written, "outbox": len(outbox(service)), "balance": account.get("/balance").json}


@pytest.fixture
def funded(login):
    admin = login("admin")
    assert admin.deposit_card(OPENING_BALANCE).status_code == 201
    return admin


def _assert_refused(response, field: str) -> None:
    assert 400 <= response.status_code < 500, response.json
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    named = [key for key in response.json["errors"]
             if key == field or key.startswith(f"{field}.")]  # "card._schema": not an object
    assert named, response.json


@pytest.mark.parametrize("body, field", CASES.values(), ids=CASES.keys())
def test_a_bad_deposit_is_refused_naming_the_field_and_writes_nothing(
        funded, service, body, field):
    before = _what_is_written(service, funded)
    response = funded.post("/deposits", body)
    _assert_refused(response, field)
    card = body.get("card")
    if isinstance(card, dict) and isinstance(card.get("number"), str) and len(card["number"]) > 8:
        assert card["number"] not in response.get_data(as_text=True)
    assert _what_is_written(service, funded) == before
    assert before["balance"]["available_cents"] == OPENING_BALANCE


@pytest.mark.parametrize("change", [
    {"amount_cents": 9_999},
    {"card": {**GOOD_CARD["card"], "number": "5555 5555 5555 4444"}},
    {"method": "purchase_order", "po_number": "PO-1", "card": _DROP},
], ids=["another amount", "another card", "another method"])
def test_a_replayed_idempotency_key_with_another_body_is_422_and_writes_nothing(
        funded, service, change):
    key = {"Idempotency-Key": "deposit-2026-11-26-001"}
    first = funded.post("/deposits", GOOD_CARD, headers=key)
    assert first.status_code == 201
    before = _what_is_written(service, funded)
    other = copy.deepcopy(GOOD_CARD)
    for name, value in change.items():
        other = _with(other, name, value)
    response = funded.post("/deposits", other, headers=key)
    _assert_refused(response, "Idempotency-Key")
    assert response.json["code"] == "idempotency_key_reused"
    assert _what_is_written(service, funded) == before
    replay = funded.post("/deposits", GOOD_CARD, headers=key)  # the first body still replays
    assert replay.status_code == 201 and replay.json == first.json
    assert _what_is_written(service, funded) == before


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "naïve"],
                         ids=["empty", "a space", "too long", "not ASCII"])
def test_a_malformed_idempotency_key_is_refused_and_writes_nothing(funded, service, key):
    before = _what_is_written(service, funded)
    response = funded.post("/deposits", GOOD_CARD, headers={"Idempotency-Key": key})
    _assert_refused(response, "Idempotency-Key")
    assert _what_is_written(service, funded) == before
