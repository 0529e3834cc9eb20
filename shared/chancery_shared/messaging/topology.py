"""The broker topology of ``design/events.md``, in one table.

Every relay and consumer declares the whole topology when it connects (declarations
are idempotent), so no message is published to an exchange before the queue that
must receive it exists — a topic exchange silently drops what nobody is bound to.
"""

from __future__ import annotations

import dataclasses

from kombu import Exchange, Queue

EVENTS_EXCHANGE = Exchange("chancery.events", type="topic", durable=True)
DEAD_EXCHANGE = Exchange("chancery.dead", type="direct", durable=True)
# Direct exchange addressing one queue by its name: retries and dead-letter replays.
RETRY_EXCHANGE = Exchange("chancery.retry", type="direct", durable=True)


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    name: str
    service: str
    bindings: tuple[str, ...]
    description: str


QUEUES: dict[str, QueueSpec] = {
    spec.name: spec
    for spec in (
        QueueSpec(
            "ca_signer.commands", "ca-signer",
            ("ca_signer.certificate.sign", "ca_signer.certificate.revoke"),
            "signing and revocation commands; every signer worker competes for them",
        ),
        QueueSpec(
            "orders.events", "orders",
            ("ledger.funds.reserved", "ledger.funds.declined",
             "ca_signer.certificate.issued", "ca_signer.certificate.rejected",
             "ca_signer.certificate.revoked", "ca_signer.key.blocked",
             "identity.unit.created", "identity.unit.updated",
             "identity.user.created", "identity.user.updated", "identity.user.deactivated"),
            "the order saga's answers from ledger and ca-signer, and identity's read model",
        ),
        QueueSpec(
            "ledger.events", "ledger",
            ("orders.order.approved", "orders.order.rejected", "orders.order.cancelled",
             "orders.order.failed", "ca_signer.certificate.issued",
             "ca_signer.certificate.rejected", "orders.order.refunded",
             "identity.user.created", "identity.user.updated", "identity.user.deactivated"),
            "reservations, captures and releases driven by the order saga, and identity's "
            "users (who hears about low balances)",
        ),
        QueueSpec("audit.all", "audit", ("#",), "every message, for the audit log"),
    )
}


def queues_of(service: str) -> list[QueueSpec]:
    return [spec for spec in QUEUES.values() if spec.service == service]


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dead"


def kombu_queue(spec: QueueSpec) -> Queue:
    return Queue(
        spec.name, durable=True, no_declare=False,
        queue_arguments={"x-dead-letter-exchange": DEAD_EXCHANGE.name,
                         "x-dead-letter-routing-key": spec.name},
    )


def declare(channel) -> None:  # noqa: ANN001
    """Declare exchanges, every queue with its bindings, and the dead-letter queues."""
    events = EVENTS_EXCHANGE(channel)
    events.declare()
    for exchange in (DEAD_EXCHANGE, RETRY_EXCHANGE):
        exchange(channel).declare()
    for spec in QUEUES.values():
        queue = kombu_queue(spec)(channel)
        queue.declare()
        for key in spec.bindings:
            queue.bind_to(exchange=EVENTS_EXCHANGE.name, routing_key=key)
        queue.bind_to(exchange=RETRY_EXCHANGE.name, routing_key=spec.name)
        kombu_dead_queue(spec.name)(channel).declare()


def kombu_dead_queue(queue: str) -> Queue:
    return Queue(dead_letter_queue_name(queue), exchange=DEAD_EXCHANGE, routing_key=queue,
                 durable=True)
