"""Wiring: the ledger's queue receives the saga's messages from the bus and relays its own."""

from __future__ import annotations

import threading

from chancery_ledger.model import Reservation, messaging
from chancery_shared.messaging import broker, topology
from chancery_shared.testing import purge_broker, wait_for
from kombu import Producer
from sqlalchemy import select

from .conftest import order_event


def _publish(*envelopes) -> None:
    with broker.connect("memory://") as connection:
        channel = connection.channel()
        topology.declare(channel)
        producer = Producer(channel)
        for envelope in envelopes:
            producer.publish(envelope.to_json(), exchange=topology.EVENTS_EXCHANGE,
                             routing_key=envelope.type, message_id=envelope.event_id,
                             content_type="application/json", delivery_mode=2)


def test_the_ledger_consumes_the_order_saga_from_the_bus_and_relays_its_events(
        service, login):
    purge_broker()
    customer = login("admin")
    customer.deposit_card(5_000)
    (consumer,) = service.consumers(prefetch=1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)
    thread.start()
    try:
        _publish(order_event("orders.order.approved", customer.account_id, "bus-order",
                             price_cents=1_200),
                 order_event("ca_signer.certificate.issued", customer.account_id,
                             "bus-order"))

        def captured():
            with service.uow() as uow:
                return uow.session.execute(select(Reservation.status).where(
                    Reservation.order_id == "bus-order")).scalar() == "captured"

        wait_for(captured, message="the reservation to be captured")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert customer.get("/balance").json["available_cents"] == 3_800

    service.relay().drain()
    with service.uow() as uow:
        unsent = uow.session.execute(select(messaging.outbox.c.type).where(
            messaging.outbox.c.sent_at.is_(None))).scalars().all()
    assert unsent == []
    purge_broker()
