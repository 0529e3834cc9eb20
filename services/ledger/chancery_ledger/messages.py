"""Message entrypoints of the ``ledger.events`` queue: the order saga's money steps, and
identity's users (the roster of who hears about the account's money).

Each function turns one envelope into one handler call. The consumer commits (with the
inbox row) after it returns, so none of these commit themselves.
"""

from __future__ import annotations

from chancery_shared.messaging.envelope import Context, Envelope
from chancery_shared.messaging.unit_of_work import UnitOfWork

from chancery_ledger import handlers

SERVICE = "ledger"


class MissingAccount(ValueError):
    """An order-flow message without the customer account: poison, dead-lettered."""


def _account(envelope: Envelope) -> str:
    if not envelope.account_id:
        raise MissingAccount(f"{envelope.type} {envelope.event_id} has no account_id")
    return envelope.account_id


def on_order_approved(envelope: Envelope, uow: UnitOfWork) -> None:
    data = envelope.data
    handlers.reserve_for_order(
        uow, Context.following(envelope, SERVICE), customer_account_id=_account(envelope),
        order_id=data["order_id"], amount_cents=data["price_cents"],
        unit_id=data.get("unit_id"), product=data.get("product"))


def on_certificate_issued(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.capture_for_order(uow, Context.following(envelope, SERVICE),
                               customer_account_id=_account(envelope),
                               order_id=envelope.data["order_id"])


def on_order_refunded(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.refund_for_order(uow, Context.following(envelope, SERVICE),
                              customer_account_id=_account(envelope),
                              order_id=envelope.data["order_id"],
                              amount_cents=envelope.data["amount_cents"],
                              note=envelope.data.get("note"))


_ENDINGS = {
    "orders.order.rejected": "order rejected",
    "orders.order.cancelled": "order cancelled",
    "orders.order.failed": "order failed",
    "ca_signer.certificate.rejected": "certificate request rejected by the CA",
}


#: A CA refusal with this code does not end the order: orders keeps it awaiting a new
#: validation, and the money stays held until it is issued or cancelled.
ORDER_WAITS = "validation_expired"


def on_order_ended(envelope: Envelope, uow: UnitOfWork) -> None:
    """Rejected, cancelled, failed, or refused by the CA: give the held money back."""
    if envelope.data.get("code") == ORDER_WAITS:
        return
    reason = envelope.data.get("reason")
    ending = _ENDINGS.get(envelope.type, "order ended")
    handlers.release_for_order(uow, Context.following(envelope, SERVICE),
                               customer_account_id=_account(envelope),
                               order_id=envelope.data["order_id"],
                               reason=f"{ending}: {reason}" if reason else ending)


def on_user_changed(envelope: Envelope, uow: UnitOfWork) -> None:
    """identity.user.created/updated/deactivated: keep the roster's row of that user."""
    handlers.apply_user_event(uow, envelope)


HANDLERS = {
    "orders.order.approved": on_order_approved,
    "ca_signer.certificate.issued": on_certificate_issued,
    "orders.order.refunded": on_order_refunded,
    **{type_: on_order_ended for type_ in _ENDINGS},
    **{type_: on_user_changed for type_ in ("identity.user.created", "identity.user.updated",
                                            "identity.user.deactivated")},
}
