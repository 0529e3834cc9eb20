"""The balance never goes negative, whatever the concurrency."""

from __future__ import annotations

import threading

from chancery_ledger.handlers import verify_balances

from .conftest import order_event, outbox

THREADS = 8


def test_eight_concurrent_reservations_succeed_exactly_as_far_as_the_money_goes(
        login, service, consumer):
    customer = login("admin")
    balance_cents, price_cents = 10_000, 3_000  # room for exactly 3
    assert customer.deposit_card(balance_cents).json["status"] == "settled"
    messages = [order_event("orders.order.approved", customer.account_id, f"order-{n}",
                            price_cents=price_cents) for n in range(THREADS)]
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def reserve(message) -> None:
        try:
            start.wait()
            consumer.handle(message)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reserve, args=(m,)) for m in messages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors

    expected = balance_cents // price_cents
    assert len(outbox(service, "ledger.funds.reserved")) == expected
    assert len(outbox(service, "ledger.funds.declined")) == THREADS - expected
    assert customer.get("/balance").json == {
        "available_cents": balance_cents - expected * price_cents,
        "reserved_cents": expected * price_cents, "currency": "USD"}
    with service.uow() as uow:
        assert verify_balances(uow).ok
