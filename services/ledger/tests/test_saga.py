"""The order saga's money steps, driven through the real consumer, handlers and inbox."""

from __future__ import annotations

import pytest
from chancery_ledger.handlers import ForeignOrder, verify_balances
from chancery_ledger.model import Reservation
from sqlalchemy import select

from .conftest import order_event, outbox

APPROVED, ISSUED = "orders.order.approved", "ca_signer.certificate.issued"


@pytest.fixture
def customer(login):
    return login("admin")


def fund(customer, cents: int) -> None:
    assert customer.deposit_card(cents).json["status"] == "settled"


def balance(customer) -> tuple[int, int]:
    body = customer.get("/balance").json
    return body["available_cents"], body["reserved_cents"]


def funds_events(service, action: str) -> list[dict]:
    return [m for m in outbox(service, f"ledger.funds.{action}")]


def reservation(service, order_id: str) -> Reservation | None:
    with service.uow() as uow:
        return uow.session.execute(
            select(Reservation).where(Reservation.order_id == order_id)).scalar_one_or_none()


def test_an_approved_order_reserves_its_price(customer, consumer, service):
    fund(customer, 10_000)
    approved = order_event(APPROVED, customer.account_id, "order-1", price_cents=3_000,
                           unit_id="unit-7", product="ssl_plus")
    assert consumer.handle(approved) is True
    assert balance(customer) == (7_000, 3_000)
    (event,) = funds_events(service, "reserved")
    assert event["data"] == {"order_id": "order-1", "amount_cents": 3_000,
                             "available_cents": 7_000}
    assert event["account_id"] == customer.account_id
    assert event["correlation_id"] == "order-1"
    assert event["causation_id"] == approved.event_id
    assert event["actor"] == {"system": "ledger"}
    assert "reserved $30.00 for order order-1" in event["summary"]
    held = reservation(service, "order-1")
    assert (held.status, held.unit_id, held.product) == ("held", "unit-7", "ssl_plus")


def test_a_short_balance_declines_and_the_order_waits_until_a_deposit_settles(
        customer, consumer, service):
    fund(customer, 1_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=2_500))
    (declined,) = funds_events(service, "declined")
    assert declined["data"] == {"order_id": "order-1", "amount_cents": 2_500,
                                "available_cents": 1_000}
    assert funds_events(service, "reserved") == []
    assert balance(customer) == (1_000, 0)
    assert reservation(service, "order-1").status == "awaiting_funds"

    fund(customer, 2_000)
    assert balance(customer) == (500, 2_500)
    (reserved,) = funds_events(service, "reserved")
    assert reserved["data"] == {"order_id": "order-1", "amount_cents": 2_500,
                                "available_cents": 500}
    assert reserved["correlation_id"] == "order-1"
    settled = outbox(service, "ledger.deposit.settled")[-1]
    assert reserved["causation_id"] == settled["event_id"]
    assert reservation(service, "order-1").status == "held"


def test_a_settled_purchase_order_also_resumes_waiting_orders_oldest_first(
        customer, consumer, service, login):
    operator = login("operator", account_id=None)
    for order_id, price in (("old-big", 5_000), ("middle", 2_000), ("young", 1_000)):
        consumer.handle(order_event(APPROVED, customer.account_id, order_id, price_cents=price))
    assert len(funds_events(service, "declined")) == 3
    po = customer.post("/deposits", {"method": "purchase_order", "amount_cents": 3_500,
                                     "po_number": "PO-7"}).json
    assert funds_events(service, "reserved") == []  # a pending PO moves no money
    operator.post(f"/deposits/{po['id']}/settle")
    # the oldest does not fit and keeps waiting; the next ones are served in age order
    assert [e["data"]["order_id"] for e in funds_events(service, "reserved")] \
        == ["middle", "young"]
    assert balance(customer) == (500, 3_000)
    assert reservation(service, "old-big").status == "awaiting_funds"
    fund(customer, 4_500)
    assert reservation(service, "old-big").status == "held"
    assert balance(customer) == (0, 8_000)


def test_an_issued_certificate_captures_the_reservation_once(customer, consumer, service):
    fund(customer, 5_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=3_000))
    consumer.handle(order_event(ISSUED, customer.account_id, "order-1"))
    assert balance(customer) == (2_000, 0)
    (captured,) = funds_events(service, "captured")
    assert captured["data"] == {"order_id": "order-1", "amount_cents": 3_000,
                                "available_cents": 2_000}
    assert reservation(service, "order-1").status == "captured"
    # a reissue is a new issued message for the same order: no second charge
    consumer.handle(order_event(ISSUED, customer.account_id, "order-1"))
    assert balance(customer) == (2_000, 0)
    assert len(funds_events(service, "captured")) == 1
    # nor does a late failure give the captured money back
    consumer.handle(order_event("orders.order.failed", customer.account_id, "order-1"))
    assert balance(customer) == (2_000, 0)
    assert funds_events(service, "released") == []


@pytest.mark.parametrize("ending", ["orders.order.rejected", "orders.order.cancelled",
                                    "orders.order.failed", "ca_signer.certificate.rejected"])
def test_an_order_that_ends_without_a_certificate_releases_its_money(
        customer, consumer, service, ending):
    fund(customer, 5_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=3_000))
    consumer.handle(order_event(ending, customer.account_id, "order-1"))
    assert balance(customer) == (5_000, 0)
    (released,) = funds_events(service, "released")
    assert released["data"] == {"order_id": "order-1", "amount_cents": 3_000,
                                "available_cents": 5_000}
    assert reservation(service, "order-1").status == "released"
    # the saga's other ending message for the same order changes nothing
    consumer.handle(order_event("orders.order.failed", customer.account_id, "order-1"))
    consumer.handle(order_event(ISSUED, customer.account_id, "order-1"))
    assert balance(customer) == (5_000, 0)
    assert len(funds_events(service, "released")) == 1
    assert funds_events(service, "captured") == []


def test_a_refusal_for_aged_validation_keeps_the_money_held_until_the_order_ends(
        customer, consumer, service):
    """orders keeps such an order awaiting a new validation: it is still bought."""
    fund(customer, 5_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=3_000))
    consumer.handle(order_event("ca_signer.certificate.rejected", customer.account_id,
                                "order-1", code="validation_expired",
                                names=["www.example.com"], organization=False))
    assert balance(customer) == (2_000, 3_000)
    assert funds_events(service, "released") == []
    assert reservation(service, "order-1").status == "held"
    consumer.handle(order_event("orders.order.cancelled", customer.account_id, "order-1"))
    assert balance(customer) == (5_000, 0)
    assert len(funds_events(service, "released")) == 1


def test_money_released_by_one_order_goes_to_an_order_waiting_for_it(customer, consumer,
                                                                      service):
    fund(customer, 3_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "first", price_cents=3_000))
    consumer.handle(order_event(APPROVED, customer.account_id, "waiting", price_cents=2_000))
    assert reservation(service, "waiting").status == "awaiting_funds"
    consumer.handle(order_event("orders.order.rejected", customer.account_id, "first"))
    assert reservation(service, "waiting").status == "held"
    assert balance(customer) == (1_000, 2_000)
    released = funds_events(service, "released")[0]
    reserved = funds_events(service, "reserved")[-1]
    assert reserved["data"]["order_id"] == "waiting"
    assert reserved["correlation_id"] == "waiting"
    assert reserved["causation_id"] == released["event_id"]


@pytest.mark.parametrize("type_, extra", [
    (APPROVED, {"price_cents": 1_000}), (ISSUED, {}), ("orders.order.cancelled", {})])
def test_a_redelivered_message_has_no_second_effect(customer, consumer, service, type_, extra):
    fund(customer, 5_000)
    if type_ != APPROVED:
        consumer.handle(order_event(APPROVED, customer.account_id, "order-1",
                                    price_cents=1_000))
    message = order_event(type_, customer.account_id, "order-1", **extra)
    assert consumer.handle(message) is True
    after_first = (balance(customer), len(outbox(service)))
    assert consumer.handle(message) is False
    assert (balance(customer), len(outbox(service))) == after_first


def test_a_second_approval_of_the_same_order_reserves_nothing(customer, consumer, service):
    fund(customer, 5_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=1_000))
    # the same business fact in a different message (a different event id)
    assert consumer.handle(order_event(APPROVED, customer.account_id, "order-1",
                                       price_cents=1_000)) is True
    assert balance(customer) == (4_000, 1_000)
    assert len(funds_events(service, "reserved")) == 1
    # also when the first approval is still waiting for money
    consumer.handle(order_event(APPROVED, customer.account_id, "order-2", price_cents=9_000))
    consumer.handle(order_event(APPROVED, customer.account_id, "order-2", price_cents=9_000))
    assert len(funds_events(service, "declined")) == 1


def test_an_order_cancelled_while_waiting_is_never_reserved_later(customer, consumer, service):
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=1_000))
    consumer.handle(order_event("orders.order.cancelled", customer.account_id, "order-1"))
    (withdrawn,) = funds_events(service, "withdrawn")
    assert withdrawn["data"]["order_id"] == "order-1"
    assert funds_events(service, "released") == []
    fund(customer, 5_000)
    assert balance(customer) == (5_000, 0)
    assert funds_events(service, "reserved") == []
    assert reservation(service, "order-1").status == "withdrawn"


def test_an_approval_arriving_after_the_order_ended_reserves_nothing(customer, consumer,
                                                                     service):
    fund(customer, 5_000)
    consumer.handle(order_event("orders.order.rejected", customer.account_id, "order-1"))
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=1_000))
    assert balance(customer) == (5_000, 0)
    assert funds_events(service, "reserved") == funds_events(service, "declined") == []


def test_a_free_order_is_reserved_and_captured_without_moving_money(customer, consumer,
                                                                    service):
    consumer.handle(order_event(APPROVED, customer.account_id, "free", price_cents=0))
    assert funds_events(service, "reserved")[0]["data"]["amount_cents"] == 0
    consumer.handle(order_event(ISSUED, customer.account_id, "free"))
    assert reservation(service, "free").status == "captured"
    assert customer.get("/transactions").json["items"] == []


def test_a_message_naming_another_accounts_order_changes_nothing(customer, consumer, service,
                                                                 login):
    fund(customer, 5_000)
    consumer.handle(order_event(APPROVED, customer.account_id, "order-1", price_cents=1_000))
    intruder = login("admin")
    with pytest.raises(ForeignOrder):
        consumer.handle(order_event("orders.order.cancelled", intruder.account_id, "order-1"))
    assert balance(customer) == (4_000, 1_000)
    assert reservation(service, "order-1").status == "held"


def test_a_message_without_an_account_is_refused(consumer):
    with pytest.raises(ValueError):
        consumer.handle(order_event(APPROVED, None, "order-1", price_cents=100))


def test_the_books_balance_after_a_whole_saga(customer, consumer, service):
    fund(customer, 10_000)
    for n in range(4):
        consumer.handle(order_event(APPROVED, customer.account_id, f"o{n}", price_cents=3_000))
    consumer.handle(order_event(ISSUED, customer.account_id, "o0"))
    consumer.handle(order_event("orders.order.cancelled", customer.account_id, "o1"))
    consumer.handle(order_event("orders.order.cancelled", customer.account_id, "o3"))
    fund(customer, 500)
    assert balance(customer) == (4_500, 3_000)
    with service.uow() as uow:
        result = verify_balances(uow)
    assert result.ok, result.discrepancies
