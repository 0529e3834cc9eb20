"""Redelivery: every message the ledger consumes has its money effect exactly once.

Each case delivers one message three times: the same envelope twice (the inbox drops
the twin) and then the same business fact in a new envelope with a new ``event_id``
(as a publisher that retried after a lost confirm would send it: only the per-order
reservation stops it). Afterwards there is one transfer and one outbox event of the
effect, and nothing else moved; for identity's user changes (the roster of who hears
about the account's money) one roster row in the state of the message. A message type
the ledger starts consuming without a case here fails
:func:`test_every_consumed_message_type_has_a_redelivery_case`.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from chancery_ledger.model import RosterMember, Transfer
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope
from sqlalchemy import func, select

from .conftest import order_event, outbox

APPROVED = "orders.order.approved"
ISSUED = "ca_signer.certificate.issued"
PRICE = 2_000
FUNDS = 10_000


@dataclass(frozen=True)
class Case:
    """``message`` after ``before`` (messages of the same order) has one ``effect``."""

    message: str
    effect_event: str
    effect_transfer: str | None  # kind of the one transfer, or None when no money moves
    before: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    funds: int = FUNDS


CASES = {
    "approved reserves": Case(APPROVED, "ledger.funds.reserved", "reservation",
                              data={"price_cents": PRICE}),
    "approved short declines": Case(APPROVED, "ledger.funds.declined", None,
                                    data={"price_cents": PRICE}, funds=PRICE - 1),
    "issued captures": Case(ISSUED, "ledger.funds.captured", "capture", before=(APPROVED,)),
    "refunded after capture": Case("orders.order.refunded", "ledger.funds.refunded", "refund",
                                   before=(APPROVED, ISSUED),
                                   data={"amount_cents": PRICE, "note": "within 30 days"}),
    "refunded while held": Case("orders.order.refunded", "ledger.funds.refunded", "refund",
                                before=(APPROVED,), data={"amount_cents": PRICE}),
    "rejected releases": Case("orders.order.rejected", "ledger.funds.released", "release",
                              before=(APPROVED,)),
    "cancelled releases": Case("orders.order.cancelled", "ledger.funds.released", "release",
                               before=(APPROVED,)),
    "cancelled while waiting withdraws": Case("orders.order.cancelled", "ledger.funds.withdrawn",
                                              None, before=(APPROVED,), funds=PRICE - 1),
    "failed releases": Case("orders.order.failed", "ledger.funds.released", "release",
                            before=(APPROVED,)),
    "CA rejection releases": Case("ca_signer.certificate.rejected", "ledger.funds.released",
                                  "release", before=(APPROVED,)),
}


# identity's users, kept as the roster of who hears about the account's money: the
# effect is the roster row (no money moves, nothing is published)
USER_CREATED, USER_UPDATED = "identity.user.created", "identity.user.updated"
USER_CASES = {
    "user created": (USER_CREATED, (), {"role": "finance", "active": True}),
    "user updated": (USER_UPDATED, (USER_CREATED,), {"role": "admin", "active": True}),
    "user deactivated": ("identity.user.deactivated", (USER_CREATED,),
                         {"role": "finance", "active": False}),
}


def test_every_consumed_message_type_has_a_redelivery_case(service):
    consumed = {type_ for handlers in service.message_handlers().values() for type_ in handlers}
    covered = {case.message for case in CASES.values()} | {t for t, _, _ in USER_CASES.values()}
    assert consumed - covered == set()


def user_event(type_: str, account_id: str, user_id: str, role: str = "finance") -> Envelope:
    """A user change as identity publishes it."""
    context = Context(actor=Actor(user_id=str(uuid.uuid4()), user_name="Ada Admin"),
                      account_id=account_id)
    return new_envelope(type=type_, source="identity", context=context, subject_type="user",
                        subject_id=user_id, summary=f"test {type_}",
                        data={"user_id": user_id, "email": "fin@example.com", "name": "Fin Ance",
                              "role": role, "unit_ids": [], "active": True})


def _roster(service) -> list[tuple[str, str, str, bool]]:
    with service.uow() as uow:
        return [(m.user_id, m.email, m.role, m.active)
                for m in uow.session.execute(select(RosterMember)).scalars()]


def _same_fact(message: Envelope) -> Envelope:
    """The business fact of ``message`` in a new envelope (a new ``event_id``), as a
    publisher that lost its confirm and published again would send it."""
    return dataclasses.replace(message, event_id=str(uuid.uuid4()))


def _transfers(service, order_id: str) -> list[tuple[str, int]]:
    with service.uow() as uow:
        return [(t.kind, t.amount_cents) for t in uow.session.execute(
            select(Transfer).where(Transfer.order_id == order_id)
            .order_by(Transfer.created_at, Transfer.id)).scalars()]


def _transfer_count(service) -> int:
    with service.uow() as uow:
        return uow.session.execute(select(func.count()).select_from(Transfer)).scalar_one()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_redelivered_message_has_its_effect_once(login, service, consumer, case):
    customer = login("admin")
    assert customer.deposit_card(case.funds).status_code == 201
    order = "order-redelivered"
    for earlier in case.before:
        extra = {"price_cents": PRICE} if earlier == APPROVED else {}
        assert consumer.handle(order_event(earlier, customer.account_id, order, **extra))
    before_transfers = _transfers(service, order)
    before_events = len(outbox(service))

    first = order_event(case.message, customer.account_id, order, **case.data)
    assert consumer.handle(first) is True
    effect_transfers = _transfers(service, order)
    events_after_first = outbox(service)
    balance_after_first = customer.get("/balance").json

    assert consumer.handle(first) is False  # the same envelope: dropped by the inbox
    consumer.handle(_same_fact(first))  # a new envelope: applied, but it must change nothing

    new = effect_transfers[len(before_transfers):]
    assert [kind for kind, _ in new] == ([case.effect_transfer] if case.effect_transfer else [])
    assert _transfers(service, order) == effect_transfers
    effects = [m for m in outbox(service)[before_events:] if m["type"] == case.effect_event]
    assert len(effects) == 1 and effects[0]["data"]["order_id"] == order
    assert outbox(service) == events_after_first, "a redelivery published something"
    assert customer.get("/balance").json == balance_after_first


def test_redeliveries_of_a_whole_saga_leave_one_transfer_per_step(login, service, consumer):
    """Approved, issued, refunded, each delivered twice and re-sent once, interleaved."""
    customer = login("admin")
    customer.deposit_card(FUNDS)
    messages = [order_event(APPROVED, customer.account_id, "o-1", price_cents=PRICE),
                order_event(ISSUED, customer.account_id, "o-1"),
                order_event("orders.order.refunded", customer.account_id, "o-1",
                            amount_cents=PRICE)]
    for message in messages:
        consumer.handle(message)
        consumer.handle(message)
    for message in messages:
        consumer.handle(_same_fact(message))
        consumer.handle(messages[0])  # a very late approved, after everything
    assert [kind for kind, _ in _transfers(service, "o-1")] == ["reservation", "capture",
                                                                "refund"]
    assert _transfer_count(service) == 4  # with the deposit
    assert customer.get("/balance").json["available_cents"] == FUNDS


@pytest.mark.parametrize("message, before, state", USER_CASES.values(), ids=USER_CASES.keys())
def test_a_redelivered_user_change_leaves_one_roster_row(service, consumer, message, before,
                                                         state):
    account, user = str(uuid.uuid4()), str(uuid.uuid4())
    for earlier in before:
        assert consumer.handle(user_event(earlier, account, user))
    events_before, transfers_before = len(outbox(service)), _transfer_count(service)
    role = "admin" if message == USER_UPDATED else "finance"
    first = user_event(message, account, user, role=role)
    assert consumer.handle(first) is True
    assert consumer.handle(first) is False
    consumer.handle(_same_fact(first))
    assert _roster(service) == [(user, "fin@example.com", state["role"], state["active"])]
    assert len(outbox(service)) == events_before
    assert _transfer_count(service) == transfers_before


def test_a_late_redelivery_of_an_older_user_change_does_not_undo_a_newer_one(
        service, consumer):
    account, user = str(uuid.uuid4()), str(uuid.uuid4())
    created = dataclasses.replace(user_event(USER_CREATED, account, user),
                                  occurred_at="2026-01-05T09:00:00Z")
    promoted = user_event(USER_UPDATED, account, user, role="admin")
    assert consumer.handle(created) and consumer.handle(promoted)
    consumer.handle(_same_fact(created))  # the old fact again, under a new id
    assert _roster(service) == [(user, "fin@example.com", "admin", True)]
