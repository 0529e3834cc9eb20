"""orders' message entrypoints: the saga's answers from ledger and ca-signer, and
identity's units and users for the read models. Each runs inside the consumer's unit of
work, which records the message in the inbox and commits."""

from __future__ import annotations

from chancery_shared.messaging.envelope import Envelope
from chancery_shared.messaging.unit_of_work import UnitOfWork

from chancery_orders import handlers, lifecycle


def on_funds_reserved(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.funds_reserved(uow, envelope)


def on_funds_declined(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.funds_declined(uow, envelope)


def on_certificate_issued(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.certificate_issued(uow, envelope)


def on_certificate_rejected(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.certificate_rejected(uow, envelope)


def on_certificate_revoked(envelope: Envelope, uow: UnitOfWork) -> None:
    lifecycle.certificate_revoked(uow, envelope)


def on_key_blocked(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.key_blocked(uow, envelope)


def on_unit_changed(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.unit_changed(uow, envelope)


def on_user_changed(envelope: Envelope, uow: UnitOfWork) -> None:
    handlers.user_changed(uow, envelope)


HANDLERS = {
    "ledger.funds.reserved": on_funds_reserved,
    "ledger.funds.declined": on_funds_declined,
    "ca_signer.certificate.issued": on_certificate_issued,
    "ca_signer.certificate.rejected": on_certificate_rejected,
    "ca_signer.certificate.revoked": on_certificate_revoked,
    "ca_signer.key.blocked": on_key_blocked,
    "identity.unit.created": on_unit_changed,
    "identity.unit.updated": on_unit_changed,
    "identity.user.created": on_user_changed,
    "identity.user.updated": on_user_changed,
    "identity.user.deactivated": on_user_changed,
}
