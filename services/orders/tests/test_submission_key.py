"""A retried submission orders once, even when the first answer was lost after commit.

The shared Idempotency-Key record is written after the order's transaction; if the
database goes away between the two, a retry later takes the key over and runs the work
again (found by the fault runs, tests/chaos). The key kept on the order itself, in the
order's own transaction, is what stops a second order then.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select

ORDERS = "/api/orders/v1/orders"


def count_orders(harness) -> int:
    from chancery_orders.model import Order

    with harness.service.uow() as uow:
        return uow.session.execute(select(func.count()).select_from(Order)).scalar_one()


def test_a_retry_after_a_lost_answer_returns_the_first_order(harness, order_body):
    headers = {**harness.headers("limited", user_id="user-lee"), "Idempotency-Key": "k-1"}
    first = harness.client.post(ORDERS, json=order_body(), headers=headers)
    assert first.status_code == 201, first.json
    # the first attempt's answer was never stored: its record is gone, as after a crash
    with harness.service.uow() as uow:
        uow.session.execute(delete(harness.service.messaging.idempotency))
        uow.commit()

    again = harness.client.post(ORDERS, json=order_body(), headers=headers)

    assert again.status_code == 201, again.json
    assert again.json["id"] == first.json["id"]
    assert count_orders(harness) == 1
    assert len(harness.outbox("orders.order.submitted")) == 1


def test_the_same_key_from_another_requester_is_another_order(harness, order_body):
    for user in ("user-ann", "user-bob"):
        headers = {**harness.headers("limited", user_id=user), "Idempotency-Key": "same"}
        assert harness.client.post(ORDERS, json=order_body(), headers=headers).status_code \
            == 201

    assert count_orders(harness) == 2
