"""Refunds: a refunded order's price goes back to the available balance, once per order."""

from __future__ import annotations

import pytest
from chancery_ledger.handlers import verify_balances
from chancery_ledger.model import Reservation, Transfer
from sqlalchemy import select

from .conftest import order_event, outbox

APPROVED, ISSUED = "orders.order.approved", "ca_signer.certificate.issued"
REFUNDED = "orders.order.refunded"


@pytest.fixture
def customer(login):
    customer = login("admin")
    assert customer.deposit_card(10_000).json["status"] == "settled"
    return customer


def balance(customer) -> tuple[int, int]:
    body = customer.get("/balance").json
    return body["available_cents"], body["reserved_cents"]


def reservation(service, order_id: str) -> Reservation:
    with service.uow() as uow:
        return uow.session.execute(
            select(Reservation).where(Reservation.order_id == order_id)).scalar_one()


def refund_transfers(service) -> list[Transfer]:
    with service.uow() as uow:
        return list(uow.session.execute(
            select(Transfer).where(Transfer.kind == "refund")).scalars())


def charged(consumer, customer, order_id: str, price: int) -> None:
    consumer.handle(order_event(APPROVED, customer.account_id, order_id, price_cents=price))
    consumer.handle(order_event(ISSUED, customer.account_id, order_id))


def refund(consumer, customer, order_id: str, amount: int, note: str | None = "duplicate"):
    envelope = order_event(REFUNDED, customer.account_id, order_id, amount_cents=amount,
                           note=note)
    return envelope, consumer.handle(envelope)


def test_a_refund_returns_the_captured_price_to_the_available_balance(
        customer, consumer, service):
    charged(consumer, customer, "order-1", 3_000)
    assert balance(customer) == (7_000, 0)

    envelope, handled = refund(consumer, customer, "order-1", 3_000)

    assert handled
    assert balance(customer) == (10_000, 0)
    assert reservation(service, "order-1").status == "refunded"
    [transfer] = refund_transfers(service)
    assert transfer.amount_cents == 3_000
    assert transfer.effect_on("revenue") == -3_000
    assert transfer.effect_on("customer_available") == 3_000
    assert "duplicate" in transfer.description
    [event] = outbox(service, "ledger.funds.refunded")
    assert event["data"] == {"order_id": "order-1", "amount_cents": 3_000,
                             "available_cents": 10_000}
    assert event["correlation_id"] == "order-1"
    assert event["causation_id"] == envelope.event_id
    assert "refunded $30.00 for order order-1" in event["summary"]
    with service.uow() as uow:
        assert verify_balances(uow).ok


def test_an_order_is_refunded_exactly_once(customer, consumer, service):
    charged(consumer, customer, "order-1", 3_000)
    envelope, _ = refund(consumer, customer, "order-1", 3_000)

    assert consumer.handle(envelope) is False  # the same message again: the inbox
    refund(consumer, customer, "order-1", 3_000)  # the same fact in a new message

    assert balance(customer) == (10_000, 0)
    assert len(refund_transfers(service)) == 1
    assert len(outbox(service, "ledger.funds.refunded")) == 1


def test_a_price_still_held_is_returned_and_a_late_capture_takes_nothing(
        customer, consumer, service):
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=3_000))
    assert balance(customer) == (7_000, 3_000)

    refund(consumer, customer, "order-1", 3_000)
    assert balance(customer) == (10_000, 0)
    [transfer] = refund_transfers(service)
    assert transfer.effect_on("customer_held") == -3_000

    consumer.handle(order_event(ISSUED, customer.account_id, "order-1"))
    assert balance(customer) == (10_000, 0)
    assert outbox(service, "ledger.funds.captured") == []
    with service.uow() as uow:
        assert verify_balances(uow).ok


@pytest.mark.parametrize("setup", ["unknown order", "never reserved", "released"])
def test_a_refund_with_nothing_taken_moves_nothing(customer, consumer, service, setup):
    if setup == "never reserved":
        consumer.handle(order_event(APPROVED, customer.account_id, "order-1",
                                    price_cents=50_000))  # too dear: it waits
    elif setup == "released":
        consumer.handle(order_event(APPROVED, customer.account_id, "order-1",
                                    price_cents=3_000))
        consumer.handle(order_event("orders.order.cancelled", customer.account_id, "order-1"))

    refund(consumer, customer, "order-1", 3_000)

    assert balance(customer) == (10_000, 0)
    assert refund_transfers(service) == []
    assert outbox(service, "ledger.funds.refunded") == []


def test_the_ledger_returns_what_it_took_whatever_the_message_says(customer, consumer,
                                                                   service):
    charged(consumer, customer, "order-1", 3_000)
    refund(consumer, customer, "order-1", 9_999)
    assert balance(customer) == (10_000, 0)
    assert outbox(service, "ledger.funds.refunded")[0]["data"]["amount_cents"] == 3_000


def test_refunded_money_goes_to_an_order_waiting_for_it(customer, consumer, service):
    charged(consumer, customer, "order-1", 6_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-2", price_cents=8_000))
    assert reservation(service, "order-2").status == "awaiting_funds"

    refund(consumer, customer, "order-1", 6_000, note=None)

    assert reservation(service, "order-2").status == "held"
    assert balance(customer) == (2_000, 8_000)
