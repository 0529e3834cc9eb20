"""Division (unit) funds: allocations, returns, and orders that spend their unit's money
first, with every share going back to where it came from."""

from __future__ import annotations

import uuid

import pytest
from chancery_ledger.handlers import verify_balances
from chancery_ledger.model import Reservation, Transfer, UnitBalance
from sqlalchemy import func, select

from .conftest import order_event, outbox

APPROVED, ISSUED = "orders.order.approved", "ca_signer.certificate.issued"
UNIT = "3f6c1b9e-2d4a-4c8e-9f10-5a7b8c9d0e1f"
OTHER_UNIT = "8a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture
def customer(login):
    """An admin whose account holds $100.00."""
    caller = login("admin")
    assert caller.deposit_card(10_000).json["status"] == "settled"
    return caller


def books_ok(service) -> None:
    with service.uow() as uow:
        result = verify_balances(uow)
    assert result.ok, result.discrepancies


def balance(caller) -> tuple[int, int]:
    body = caller.get("/balance").json
    return body["available_cents"], body["reserved_cents"]


def unit(caller, unit_id: str = UNIT) -> tuple[int, int]:
    body = caller.get(f"/units/{unit_id}/funds").json
    return body["available_cents"], body["reserved_cents"]


def allocate(caller, cents: int, unit_id: str = UNIT, **kw):
    return caller.post(f"/units/{unit_id}/funds", {"amount_cents": cents}, **kw)


def give_back(caller, cents: int, unit_id: str = UNIT, **kw):
    return caller.post(f"/units/{unit_id}/funds/return", {"amount_cents": cents}, **kw)


def transfer_count(service) -> int:
    with service.uow() as uow:
        return uow.session.execute(select(func.count()).select_from(Transfer)).scalar_one()


def reservation(service, order_id: str) -> Reservation:
    with service.uow() as uow:
        return uow.session.execute(
            select(Reservation).where(Reservation.order_id == order_id)).scalar_one()


# --- allocation and return ------------------------------------------------------------------


def test_an_allocation_moves_available_money_to_the_unit_with_an_event(customer, service):
    response = allocate(customer, 3_000)
    assert response.status_code == 201, response.json
    assert response.json == {"unit_id": UNIT, "available_cents": 3_000, "reserved_cents": 0,
                             "currency": "USD"}
    assert balance(customer) == (7_000, 0)
    assert unit(customer) == (3_000, 0)
    (event,) = outbox(service, "ledger.unit_funds.allocated")
    assert event["data"] == {"unit_id": UNIT, "amount_cents": 3_000,
                             "unit_available_cents": 3_000, "available_cents": 7_000}
    assert event["subject"] == {"type": "unit", "id": UNIT}
    assert event["account_id"] == customer.account_id
    assert event["summary"].startswith(f"Admin {customer.user_id[:4]} allocated $30.00 to unit")
    books_ok(service)


def test_a_return_moves_the_units_money_back(customer, service):
    allocate(customer, 3_000)
    response = give_back(customer, 1_000)
    assert response.status_code == 201
    assert (response.json["available_cents"], response.json["reserved_cents"]) == (2_000, 0)
    assert balance(customer) == (8_000, 0)
    (event,) = outbox(service, "ledger.unit_funds.returned")
    assert event["data"] == {"unit_id": UNIT, "amount_cents": 1_000,
                             "unit_available_cents": 2_000, "available_cents": 8_000}
    kinds = [t["type"] for t in customer.get("/transactions").json["items"]]
    assert kinds[:2] == ["allocation_return", "allocation"]
    books_ok(service)


def test_the_unit_list_shows_every_funded_unit_of_the_account_only(customer, login, service):
    allocate(customer, 1_000)
    allocate(customer, 2_000, OTHER_UNIT)
    stranger = login("finance")
    stranger.deposit_card(5_000)
    allocate(stranger, 500)
    items = customer.get("/units/funds").json["items"]
    assert {(i["unit_id"], i["available_cents"]) for i in items} == {(UNIT, 1_000),
                                                                     (OTHER_UNIT, 2_000)}
    assert stranger.get("/units/funds").json["items"] == [
        {"unit_id": UNIT, "available_cents": 500, "reserved_cents": 0, "currency": "USD"}]
    assert unit(login("admin")) == (0, 0)  # a unit never funded: zeros, nothing written


@pytest.mark.parametrize("move, cents, why", [
    ("allocate", 10_001, "more than the account has available"),
    ("return", 1, "more than the unit has available"),
])
def test_an_overdraw_is_refused_and_nothing_is_written(customer, service, move, cents, why):
    before = transfer_count(service)
    response = (allocate if move == "allocate" else give_back)(customer, cents)
    assert response.status_code == 409, why
    assert response.json["code"] == "insufficient_funds"
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert transfer_count(service) == before
    assert balance(customer) == (10_000, 0)
    action = "allocated" if move == "allocate" else "returned"
    assert outbox(service, f"ledger.unit_funds.{action}") == []
    with service.uow() as uow:
        assert uow.session.execute(select(UnitBalance)).scalars().all() == []
    books_ok(service)


def test_money_reserved_for_a_units_order_cannot_be_returned(customer, consumer, service):
    allocate(customer, 3_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=2_500,
                                unit_id=UNIT))
    assert give_back(customer, 501).status_code == 409
    assert give_back(customer, 500).status_code == 201
    assert unit(customer) == (0, 2_500)
    books_ok(service)


@pytest.mark.parametrize("role, status", [("admin", 201), ("finance", 201),
                                          ("unit_admin", 403), ("limited", 403)])
def test_only_admins_and_finance_move_unit_funds(login, role, status):
    caller = login(role, unit_ids=(UNIT,))
    if status == 201:
        caller.deposit_card(1_000)
    for response in (allocate(caller, 100), give_back(caller, 1)):
        assert response.status_code == status
        if status == 403:
            assert response.json["missing_permission"] == "deposit_funds"
    if role == "limited":
        for path in ("/units/funds", f"/units/{UNIT}/funds"):
            response = caller.get(path)
            assert response.status_code == 403
            assert response.json["missing_permission"] == "read_unit_funds"


def test_a_unit_admin_reads_their_own_units_funds_only(customer, login):
    """design/roles.md: their units' funds, read only (another unit's: 404)."""
    allocate(customer, 1_000)
    allocate(customer, 2_000, OTHER_UNIT)
    third = str(uuid.uuid4())
    allocate(customer, 300, third)
    lead = login("unit_admin", customer.account_id, unit_ids=(UNIT, third))
    assert unit(lead) == (1_000, 0)
    assert unit(lead, third) == (300, 0)
    refused = lead.get(f"/units/{OTHER_UNIT}/funds")
    assert refused.status_code == 404
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert {(i["unit_id"], i["available_cents"]) for i in lead.get("/units/funds").json[
        "items"]} == {(UNIT, 1_000), (third, 300)}
    nobody = login("unit_admin", customer.account_id)  # a unit administrator of no unit
    assert nobody.get("/units/funds").json["items"] == []
    # another account's unit administrator of the same unit id sees their own zeros
    stranger = login("unit_admin", unit_ids=(UNIT,))
    assert unit(stranger) == (0, 0)
    # read only: the account's money stays out of reach
    for path in ("/balance", "/transactions", "/deposits"):
        assert lead.get(path).status_code == 403, path


@pytest.mark.parametrize("unit_id", ["-starts-with-dash", "has space", "x" * 37, "a.b"])
def test_a_malformed_unit_id_is_422_naming_it(customer, unit_id):
    response = allocate(customer, 100, unit_id=unit_id)
    assert response.status_code == 422
    assert "unit_id" in response.json["errors"]
    assert balance(customer) == (10_000, 0)


@pytest.mark.parametrize("body", [
    {"amount_cents": 0}, {"amount_cents": -100}, {"amount_cents": 12.5},
    {"amount_cents": "100"}, {"amount_cents": 10**15}, {"amount_cents": None},
    {"amount_cents": True}, {},
])
def test_bad_amounts_are_422_naming_amount_cents(customer, service, body):
    for path in (f"/units/{UNIT}/funds", f"/units/{UNIT}/funds/return"):
        response = customer.post(path, body)
        assert response.status_code == 422, (path, body, response.json)
        assert "amount_cents" in response.json["errors"]
    assert balance(customer) == (10_000, 0)
    books_ok(service)


def test_a_replayed_idempotency_key_moves_the_money_once(customer, service):
    key = {"Idempotency-Key": f"alloc-{uuid.uuid4()}"}
    first = allocate(customer, 2_000, headers=key)
    again = allocate(customer, 2_000, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert balance(customer) == (8_000, 0)
    assert len(outbox(service, "ledger.unit_funds.allocated")) == 1
    other_body = allocate(customer, 2_001, headers=key)
    assert other_body.status_code == 422
    assert "Idempotency-Key" in other_body.json["errors"]
    refused = allocate(customer, 50_000, headers={"Idempotency-Key": "too-much"})
    assert refused.status_code == 409
    retried = allocate(customer, 1_000, headers={"Idempotency-Key": "too-much"})
    assert retried.status_code == 201  # a failed attempt frees its key
    books_ok(service)


# --- orders spend their unit's funds first ---------------------------------------------------


def test_a_units_order_draws_on_its_unit_first_and_the_account_for_the_rest(
        customer, consumer, service):
    allocate(customer, 1_500)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=2_000,
                                unit_id=UNIT))
    assert unit(customer) == (0, 1_500)
    assert balance(customer) == (8_000, 500)
    held = reservation(service, "o-1")
    assert (held.status, held.unit_amount_cents, held.account_amount_cents) == ("held", 1_500,
                                                                                 500)
    books_ok(service)


def test_an_order_of_another_unit_or_none_leaves_the_unit_funds_alone(customer, consumer,
                                                                       service):
    allocate(customer, 1_500)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=1_000,
                                unit_id=OTHER_UNIT))
    consumer.handle(order_event(APPROVED, customer.account_id, "o-2", price_cents=1_000))
    assert unit(customer) == (1_500, 0)
    assert balance(customer) == (6_500, 2_000)
    with service.uow() as uow:  # no row for a unit the account never funded
        assert uow.session.get(UnitBalance, (customer.account_id, OTHER_UNIT)) is None
    books_ok(service)


def test_unit_funds_plus_the_account_must_cover_the_price(customer, consumer, service):
    allocate(customer, 9_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=10_001,
                                unit_id=UNIT))
    (declined,) = outbox(service, "ledger.funds.declined")
    assert "$90.00 in its unit's funds" in declined["summary"]
    assert reservation(service, "o-1").status == "awaiting_funds"
    customer.deposit_card(1)  # the missing cent: the waiting order is held, unit first
    assert reservation(service, "o-1").unit_amount_cents == 9_000
    assert unit(customer) == (0, 9_000)
    assert balance(customer) == (0, 1_001)
    books_ok(service)


@pytest.mark.parametrize("ending, unit_after, account_after", [
    (ISSUED, (0, 0), (8_000, 0)),                        # captured: revenue took both shares
    ("orders.order.cancelled", (1_500, 0), (8_500, 0)),  # released: each share back home
    ("orders.order.rejected", (1_500, 0), (8_500, 0)),
    ("ca_signer.certificate.rejected", (1_500, 0), (8_500, 0)),
])
def test_the_end_of_a_units_order_moves_each_share_back_where_it_came_from(
        customer, consumer, service, ending, unit_after, account_after):
    allocate(customer, 1_500)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=2_000,
                                unit_id=UNIT))
    consumer.handle(order_event(ending, customer.account_id, "o-1"))
    assert unit(customer) == unit_after
    assert balance(customer) == account_after
    books_ok(service)


@pytest.mark.parametrize("captured_first", [True, False])
def test_a_refund_returns_the_unit_share_to_the_unit(customer, consumer, service,
                                                     captured_first):
    allocate(customer, 1_500)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=2_000,
                                unit_id=UNIT))
    if captured_first:
        consumer.handle(order_event(ISSUED, customer.account_id, "o-1"))
    consumer.handle(order_event("orders.order.refunded", customer.account_id, "o-1",
                                amount_cents=2_000, note="within 30 days"))
    assert unit(customer) == (1_500, 0)
    assert balance(customer) == (8_500, 0)
    assert reservation(service, "o-1").status == "refunded"
    books_ok(service)


def test_every_saga_message_delivered_twice_has_one_effect_on_unit_funds(
        customer, consumer, service):
    allocate(customer, 1_500)
    approved = order_event(APPROVED, customer.account_id, "o-1", price_cents=2_000,
                           unit_id=UNIT)
    issued = order_event(ISSUED, customer.account_id, "o-1")
    refunded = order_event("orders.order.refunded", customer.account_id, "o-1",
                           amount_cents=2_000)
    for message in (approved, issued, refunded):
        consumer.handle(message)
        consumer.handle(message)  # the same envelope again: the inbox drops it
        twin = order_event(message.type, message.account_id, "o-1",
                           **{k: v for k, v in message.data.items() if k != "order_id"})
        consumer.handle(twin)  # the same fact, a new envelope: the reservation stops it
    with service.uow() as uow:
        kinds = sorted(uow.session.execute(
            select(Transfer.kind).where(Transfer.order_id == "o-1")).scalars())
    assert kinds == ["capture", "refund", "reservation"]
    assert unit(customer) == (1_500, 0)
    assert balance(customer) == (8_500, 0)
    books_ok(service)
