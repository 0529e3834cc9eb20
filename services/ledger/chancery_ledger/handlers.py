"""The ledger's service layer: deposits, reads, and the order saga's money steps.

HTTP commands (deposits, settling) commit their own unit of work. The saga steps
(:func:`reserve_for_order`, :func:`capture_for_order`, :func:`release_for_order`) do
*not* commit: the message consumer records the message in the inbox and commits both
together, so a redelivery can never apply an effect twice. On top of the inbox, every
saga step is idempotent per order (one :class:`Reservation` per ``order_id``), because
the same business fact can arrive as two different messages.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chancery_shared.auth.permissions import ADMIN, FINANCE
from chancery_shared.auth.tokens import Principal
from chancery_shared.mail import Mail, Mailer, MailNotSent, recipients
from chancery_shared.messaging.envelope import Actor, Context, Envelope, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.pagination import decode_cursor, encode_cursor
from chancery_shared.web.problems import Conflict, InvalidField, NotFound, Problem
from sqlalchemy import and_, or_, select, update

from chancery_ledger import journal
from chancery_ledger.cards import CardDetails
from chancery_ledger.journal import (
    Leg,
    find_unit_balance,
    lock_balance,
    lock_unit_balance,
    peek_balance,
    verify_balances,
)
from chancery_ledger.model import (
    ALLOCATION,
    ALLOCATION_RETURN,
    AWAITING_FUNDS,
    CAPTURE,
    CAPTURED,
    CARD,
    CUSTOMER_AVAILABLE,
    CUSTOMER_HELD,
    DEPOSIT,
    HELD,
    NOTICE_PENDING,
    NOTICE_SENT,
    NOTICE_SKIPPED,
    PAYMENT_CLEARING,
    PURCHASE_ORDER,
    REFUND,
    RELEASE,
    RESERVATION,
    REVENUE,
    UNIT_AVAILABLE,
    UNIT_HELD,
    WITHDRAWN,
    Balance,
    Deposit,
    LowBalanceSetting,
    PendingNotice,
    Receipt,
    Reservation,
    RosterMember,
    Transfer,
    UnitBalance,
    format_usd,
    new_id,
)
from chancery_ledger.payments import PaymentProcessor, ProcessorUnavailable

__all__ = ["verify_balances"]  # re-exported: the proof that balances equal the journal
log = logging.getLogger(__name__)
SERVICE = "ledger"
BeforeCommit = Callable[[UnitOfWork, Deposit], None]
DEFAULT_DUE_IN_DAYS = 30  # a purchase order's invoice is due net 30 unless asked otherwise
FINANCE_ROLES = (FINANCE, ADMIN)  # who hears about the account's money (roles.md)


class ForeignOrder(Exception):
    """A message names an order the ledger knows under another customer account."""


def _actor_name(context: Context) -> str:
    return context.actor.user_name or context.actor.system or "someone"


def _created_by(context: Context) -> str | None:
    if context.actor.user_id:
        return context.actor.user_id
    return f"system:{context.actor.system}" if context.actor.system else None


def _short(identifier: str) -> str:
    return identifier[:8]


def _post(uow: UnitOfWork, context: Context, balance: Balance, *, legs: list[Leg],
          **kw) -> Transfer | None:  # noqa: ANN003 - journal.post's keywords
    """Post a transfer (its empty legs dropped; nothing at all when every leg is empty),
    then watch the low-balance threshold with the balance it left."""
    legs = [(kind, cents) for kind, cents in legs if cents]
    if not legs:
        return None
    transfer = journal.post(uow.session, balance, legs=legs, **kw)
    _watch_low_balance(uow, context, balance)
    return transfer


# --- reads -------------------------------------------------------------------------------


def balance_of(uow: UnitOfWork, customer_account_id: str) -> dict[str, int | str]:
    """The account's balances; an account the ledger has never seen has zeros."""
    available, reserved = peek_balance(uow.session, customer_account_id)
    return {"available_cents": available, "reserved_cents": reserved, "currency": "USD"}


def list_transactions(uow: UnitOfWork, customer_account_id: str, *, limit: int,
                      cursor: str | None, since: datetime | None,
                      until: datetime | None) -> tuple[list[Transfer], str | None]:
    """Every movement of the account, newest first; ``since`` inclusive, ``until`` exclusive."""
    if since and until and since >= until:
        raise InvalidField("to", "must be later than 'from'")
    query = select(Transfer).where(Transfer.customer_account_id == customer_account_id)
    if since:
        query = query.where(Transfer.created_at >= since)
    if until:
        query = query.where(Transfer.created_at < until)
    position = decode_cursor(cursor)
    if position is not None:
        try:
            at, last_id = datetime.fromisoformat(position["at"]), str(position["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
        query = query.where(or_(Transfer.created_at < at,
                                and_(Transfer.created_at == at, Transfer.id < last_id)))
    rows = list(uow.session.execute(
        query.order_by(Transfer.created_at.desc(), Transfer.id.desc()).limit(limit + 1)
    ).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"at": rows[-1].created_at.isoformat(), "id": rows[-1].id})
    return rows, next_cursor


def get_receipt(uow: UnitOfWork, customer_account_id: str, receipt_id: str) -> Receipt:
    receipt = uow.session.get(Receipt, receipt_id)
    if receipt is None or receipt.customer_account_id != customer_account_id:
        raise NotFound("no such receipt")
    return receipt


def get_deposit(uow: UnitOfWork, principal: Principal, deposit_id: str) -> Deposit:
    """A deposit the caller may see: their account's, or any for the platform operator."""
    deposit = uow.session.get(Deposit, deposit_id)
    if deposit is None or not (principal.is_operator
                               or deposit.customer_account_id == principal.account_id):
        raise NotFound("no such deposit")
    return deposit


def list_deposits(uow: UnitOfWork, principal: Principal, *, status: str | None, limit: int,
                  cursor: str | None) -> tuple[list[Deposit], str | None]:
    """Deposits, newest first: the caller's account's, or every account's for the operator."""
    query = select(Deposit)
    if not principal.is_operator:
        query = query.where(Deposit.customer_account_id == principal.account_id)
    if status:
        query = query.where(Deposit.status == status)
    position = decode_cursor(cursor)
    if position is not None:
        try:
            at, last_id = datetime.fromisoformat(position["at"]), str(position["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
        query = query.where(or_(Deposit.created_at < at,
                                and_(Deposit.created_at == at, Deposit.id < last_id)))
    rows = list(uow.session.execute(
        query.order_by(Deposit.created_at.desc(), Deposit.id.desc()).limit(limit + 1)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"at": rows[-1].created_at.isoformat(), "id": rows[-1].id})
    return rows, next_cursor


# --- deposits ----------------------------------------------------------------------------


def _deposit_event(uow: UnitOfWork, context: Context, deposit: Deposit, summary: str) -> Envelope:
    return uow.event(f"ledger.deposit.{deposit.status}", context,
                     subject=("deposit", deposit.id), summary=summary,
                     data={"deposit_id": deposit.id, "method": deposit.method,
                           "amount_cents": deposit.amount_cents})


def _credit(uow: UnitOfWork, context: Context, balance: Balance, deposit: Deposit,
            summary: str) -> None:
    """Move a settled deposit into the available balance, issue its receipt, and let
    orders that were waiting for money have it."""
    _post(uow, context, balance, kind=DEPOSIT,
                 legs=[(PAYMENT_CLEARING, -deposit.amount_cents),
                       (CUSTOMER_AVAILABLE, deposit.amount_cents)],
                 description=f"Deposit by {deposit.describe_method()}",
                 created_by=_created_by(context), deposit_id=deposit.id)
    issued = utcnow()
    receipt_id = new_id()
    deposit.receipt = Receipt(id=receipt_id, number=f"R-{issued:%Y%m%d}-{receipt_id[:8].upper()}",
                              customer_account_id=deposit.customer_account_id,
                              amount_cents=deposit.amount_cents, issued_at=issued)
    uow.session.flush()
    settled = _deposit_event(uow, context, deposit, summary)
    _reserve_waiting_orders(uow, balance, settled, " now that a deposit has settled")


def deposit_by_card(uow: UnitOfWork, processor: PaymentProcessor, principal: Principal,
                    context: Context, *, amount_cents: int, card: CardDetails,
                    before_commit: BeforeCommit | None = None) -> Deposit:
    """Charge a card and record the outcome: settled (credited, with a receipt) or declined.

    The processor is called before the database transaction starts, so a slow
    processor never holds the balance lock; the deposit id is the charge's reference,
    which makes a retried charge harmless at the processor.
    """
    assert principal.account_id is not None
    deposit_id = new_id()
    try:
        outcome = processor.charge(card, amount_cents, reference=deposit_id,
                                   description=f"Chancery deposit {deposit_id}")
    except ProcessorUnavailable as exc:
        raise Problem(f"the payment processor is unavailable ({exc}); nothing was charged, "
                      "try again later", status=503, code="payment_processor_unavailable") from exc
    deposit = Deposit(id=deposit_id, customer_account_id=principal.account_id, method=CARD,
                      status="pending", amount_cents=amount_cents, card_brand=card.brand,
                      card_last4=card.last4, processor_reference=outcome.reference,
                      requested_by=principal.user_id, requested_by_name=principal.name,
                      created_at=utcnow(), receipt=None)
    uow.session.add(deposit)
    who = _actor_name(context)
    if outcome.approved:
        balance = lock_balance(uow.session, principal.account_id)
        deposit.mark_settled(by_id=principal.user_id, by_name=principal.name)
        _credit(uow, context, balance, deposit,
                f"{who} deposited {format_usd(amount_cents)} by {deposit.describe_method()}")
    else:
        deposit.mark_declined(outcome.decline_code or "declined",
                              outcome.decline_reason or "the card was declined")
        uow.session.flush()
        _deposit_event(uow, context, deposit,
                       f"{who}'s deposit of {format_usd(amount_cents)} by "
                       f"{deposit.describe_method()} was declined: {deposit.decline_reason}")
    if before_commit:
        before_commit(uow, deposit)
    uow.commit()
    return deposit


def invoice_number(customer_account_id: str, number: int) -> str:
    """``INV-1A2B3C4D-000042``: the account's short id and its sequence number."""
    return f"INV-{customer_account_id[:8].upper()}-{number:06d}"


def deposit_by_purchase_order(uow: UnitOfWork, principal: Principal, context: Context, *,
                              amount_cents: int, po_number: str,
                              due_in_days: int = DEFAULT_DUE_IN_DAYS,
                              before_commit: BeforeCommit | None = None) -> Deposit:
    """Record a purchase order with its invoice (the account's next invoice number, due
    ``due_in_days`` after today); it credits nothing until the operator settles it."""
    assert principal.account_id is not None
    created = utcnow()
    number = journal.next_invoice_number(uow.session, principal.account_id)
    deposit = Deposit(customer_account_id=principal.account_id, method=PURCHASE_ORDER,
                      status="pending", amount_cents=amount_cents, po_number=po_number.strip(),
                      invoice_number=invoice_number(principal.account_id, number),
                      due_date=created.date() + timedelta(days=due_in_days),
                      requested_by=principal.user_id, requested_by_name=principal.name,
                      created_at=created, receipt=None)
    uow.session.add(deposit)
    uow.session.flush()
    _deposit_event(uow, context, deposit,
                   f"{_actor_name(context)} submitted purchase order {deposit.po_number} for "
                   f"{format_usd(amount_cents)} (invoice {deposit.invoice_number}, due "
                   f"{deposit.due_date:%Y-%m-%d}); it is pending until the operator settles it")
    if before_commit:
        before_commit(uow, deposit)
    uow.commit()
    return deposit


def settle_deposit(uow: UnitOfWork, principal: Principal, context: Context,
                   deposit_id: str) -> Deposit:
    """The operator confirms a purchase order was paid: credit it (409 unless pending)."""
    deposit = uow.session.execute(
        select(Deposit).where(Deposit.id == deposit_id).with_for_update()
        .execution_options(populate_existing=True)).scalar_one_or_none()
    if deposit is None:
        raise NotFound("no such deposit")
    balance = lock_balance(uow.session, deposit.customer_account_id)
    deposit.mark_settled(by_id=principal.user_id, by_name=principal.name)
    _credit(uow, context.with_account(deposit.customer_account_id), balance, deposit,
            f"{_actor_name(context)} settled the {format_usd(deposit.amount_cents)} deposit by "
            f"{deposit.describe_method()}")
    uow.commit()
    return deposit


# --- the order saga ----------------------------------------------------------------------


def _funds_event(uow: UnitOfWork, context: Context, action: str, reservation: Reservation,
                 balance: Balance, summary: str) -> Envelope:
    return uow.event(f"ledger.funds.{action}", context, subject=("order", reservation.order_id),
              summary=summary, correlation_id=reservation.order_id,
              data={"order_id": reservation.order_id, "amount_cents": reservation.amount_cents,
                    "available_cents": balance.available_cents})


def _unit_share(reservation: Reservation) -> str:
    if not reservation.unit_amount_cents:
        return ""
    return (f" ({format_usd(reservation.unit_amount_cents)} of it from unit "
            f"{_short(reservation.unit_id or '')}'s funds)")


def _split(balance: Balance, unit: UnitBalance | None, amount_cents: int) -> tuple[int, int] | None:
    """``(unit share, account share)`` of a price: the unit's funds first, the rest from
    the account's available balance; None when the two together fall short."""
    unit_share = min(unit.available_cents, amount_cents) if unit is not None else 0
    account_share = amount_cents - unit_share
    return (unit_share, account_share) if account_share <= balance.available_cents else None


def _unit_of(uow: UnitOfWork, reservation: Reservation) -> UnitBalance | None:
    """The locked unit funds a reservation draws on (None: it has no unit share)."""
    if not reservation.unit_amount_cents or not reservation.unit_id:
        return None
    return lock_unit_balance(uow.session, reservation.customer_account_id, reservation.unit_id)


def _hold(uow: UnitOfWork, context: Context, balance: Balance, reservation: Reservation,
          split: tuple[int, int], unit: UnitBalance | None, why: str = "") -> None:
    unit_share, account_share = split
    reservation.unit_amount_cents = unit_share
    _post(uow, context, balance, kind=RESERVATION,
          legs=[(UNIT_AVAILABLE, -unit_share), (UNIT_HELD, unit_share),
                (CUSTOMER_AVAILABLE, -account_share), (CUSTOMER_HELD, account_share)],
          description=f"Reserved for order {reservation.order_id}",
          created_by=_created_by(context), reservation_id=reservation.id,
          order_id=reservation.order_id, unit=unit)
    reservation.mark_held()
    _funds_event(uow, context, "reserved", reservation, balance,
                 f"{_actor_name(context)} reserved {format_usd(reservation.amount_cents)} for "
                 f"order {_short(reservation.order_id)}{_unit_share(reservation)}{why}; "
                 f"{format_usd(balance.available_cents)} left available")


def _reservation_of(uow: UnitOfWork, customer_account_id: str, order_id: str) -> Reservation | None:
    reservation = uow.session.execute(
        select(Reservation).where(Reservation.order_id == order_id)
        .execution_options(populate_existing=True)).scalar_one_or_none()
    if reservation is not None and reservation.customer_account_id != customer_account_id:
        raise ForeignOrder(f"order {order_id} belongs to another account in the ledger")
    return reservation


def reserve_for_order(uow: UnitOfWork, context: Context, *, customer_account_id: str,
                      order_id: str, amount_cents: int, unit_id: str | None = None,
                      product: str | None = None) -> Reservation:
    """An approved order asks for its price: hold it, or decline and keep it waiting.

    The order's unit's funds pay first, the account's available balance the rest; the
    split is kept on the reservation. Does nothing when the order already has a
    reservation (any status), so a second ``approved`` for the same order reserves
    nothing. Does not commit.
    """
    balance = lock_balance(uow.session, customer_account_id)
    existing = _reservation_of(uow, customer_account_id, order_id)
    if existing is not None:
        log.info("order %s already has a %s reservation; nothing to do", order_id,
                 existing.status)
        return existing
    unit = find_unit_balance(uow.session, customer_account_id, unit_id) if unit_id else None
    reservation = Reservation(order_id=order_id, customer_account_id=customer_account_id,
                              amount_cents=amount_cents, unit_amount_cents=0,
                              status=AWAITING_FUNDS, unit_id=unit_id, product=product,
                              requested_at=utcnow())
    uow.session.add(reservation)
    uow.session.flush()
    split = _split(balance, unit, amount_cents)
    if split is not None:
        _hold(uow, context, balance, reservation, split, unit)
    else:
        unit_note = (f" and {format_usd(unit.available_cents)} in its unit's funds"
                     if unit is not None and unit.available_cents else "")
        _funds_event(uow, context, "declined", reservation, balance,
                     f"{_actor_name(context)} could not reserve {format_usd(amount_cents)} for "
                     f"order {_short(order_id)}: only {format_usd(balance.available_cents)} "
                     f"available{unit_note}; the order waits for a deposit")
    return reservation


def _reserve_waiting_orders(uow: UnitOfWork, balance: Balance, cause: Envelope,
                            why: str) -> None:
    """After money became available (a deposit settled, a reservation was released): hold
    every waiting order the balance (and its unit's funds) now covers, oldest first.

    An order too expensive for what is left is skipped (it keeps waiting) and younger,
    cheaper orders still get their money.
    """
    waiting = uow.session.execute(
        select(Reservation).where(Reservation.customer_account_id == balance.customer_account_id,
                                  Reservation.status == AWAITING_FUNDS)
        .order_by(Reservation.requested_at, Reservation.id)).scalars().all()
    for reservation in waiting:
        unit = (find_unit_balance(uow.session, balance.customer_account_id, reservation.unit_id)
                if reservation.unit_id else None)
        split = _split(balance, unit, reservation.amount_cents)
        if split is not None:
            context = Context(actor=Actor.service(SERVICE), account_id=balance.customer_account_id,
                              correlation_id=reservation.order_id, causation_id=cause.event_id)
            _hold(uow, context, balance, reservation, split, unit, why=why)


def capture_for_order(uow: UnitOfWork, context: Context, *, customer_account_id: str,
                      order_id: str) -> Reservation | None:
    """The certificate was issued: the held price becomes revenue, once per order.

    A later issuance for the same order (a reissue) finds it captured and charges
    nothing. Does not commit.
    """
    balance = lock_balance(uow.session, customer_account_id)
    reservation = _reservation_of(uow, customer_account_id, order_id)
    if reservation is None or reservation.status != HELD:
        if reservation is None or reservation.status != "captured":
            log.warning("certificate issued for order %s with no held reservation (%s); "
                        "nothing captured", order_id,
                        reservation.status if reservation else "none")
        return reservation
    _post(uow, context, balance, kind=CAPTURE,
          legs=[(UNIT_HELD, -reservation.unit_amount_cents),
                (CUSTOMER_HELD, -reservation.account_amount_cents),
                (REVENUE, reservation.amount_cents)],
          description=f"Charged for order {order_id} (certificate issued)",
          created_by=_created_by(context), reservation_id=reservation.id,
          order_id=order_id, unit=_unit_of(uow, reservation))
    reservation.mark_captured()
    _funds_event(uow, context, "captured", reservation, balance,
                 f"{_actor_name(context)} charged {format_usd(reservation.amount_cents)} for "
                 f"order {_short(order_id)}{_unit_share(reservation)} now that its "
                 "certificate is issued")
    return reservation


def _give_back(reservation: Reservation, source: str | None) -> list[Leg]:
    """Legs returning a reservation's price to where it was taken from: its unit share to
    the unit's funds, the rest to the account. ``source`` None: from the held accounts."""
    if source is None:
        taken = [(UNIT_HELD, -reservation.unit_amount_cents),
                 (CUSTOMER_HELD, -reservation.account_amount_cents)]
    else:
        taken = [(source, -reservation.amount_cents)]
    return [*taken, (UNIT_AVAILABLE, reservation.unit_amount_cents),
            (CUSTOMER_AVAILABLE, reservation.account_amount_cents)]


def release_for_order(uow: UnitOfWork, context: Context, *, customer_account_id: str,
                      order_id: str, reason: str | None) -> Reservation:
    """The order ended without a certificate: give back what was held, once, to where it
    came from (the unit's share to the unit's funds).

    Released money goes to orders waiting for funds, oldest first, as a deposit would.
    A waiting (never held) request is withdrawn so a later deposit does not reserve
    for a dead order. When the ledger has not heard of the order yet, a withdrawn
    marker is recorded so that a late ``approved`` reserves nothing. Does not commit.
    """
    reason = reason[:300] if reason else None
    balance = lock_balance(uow.session, customer_account_id)
    reservation = _reservation_of(uow, customer_account_id, order_id)
    who = _actor_name(context)
    if reservation is None:
        reservation = Reservation(order_id=order_id, customer_account_id=customer_account_id,
                                  amount_cents=0, unit_amount_cents=0, status=WITHDRAWN,
                                  requested_at=utcnow(), closed_at=utcnow(),
                                  close_reason=reason)
        uow.session.add(reservation)
        uow.session.flush()
        log.info("order %s ended before the ledger reserved anything; marked closed", order_id)
        return reservation
    if reservation.status == AWAITING_FUNDS:
        reservation.mark_withdrawn(reason)
        _funds_event(uow, context, "withdrawn", reservation, balance,
                     f"{who} withdrew the waiting request for "
                     f"{format_usd(reservation.amount_cents)} for order {_short(order_id)} "
                     f"({reason or 'order ended'}); nothing had been held")
    elif reservation.status == HELD:
        _post(uow, context, balance, kind=RELEASE, legs=_give_back(reservation, None),
              description=f"Released for order {order_id}" + (f" ({reason})" if reason else ""),
              created_by=_created_by(context), reservation_id=reservation.id,
              order_id=order_id, unit=_unit_of(uow, reservation))
        reservation.mark_released(reason)
        released = _funds_event(
            uow, context, "released", reservation, balance,
            f"{who} released {format_usd(reservation.amount_cents)} held for order "
            f"{_short(order_id)}{_unit_share(reservation)} ({reason or 'order ended'}); "
            f"{format_usd(balance.available_cents)} available")
        _reserve_waiting_orders(uow, balance, released,
                                f" with the money released by order {_short(order_id)}")
    return reservation


def refund_for_order(uow: UnitOfWork, context: Context, *, customer_account_id: str,
                     order_id: str, amount_cents: int, note: str | None) -> Reservation | None:
    """A refunded order: what the ledger took for it returns to where it came from (the
    unit's share to the unit's funds, the rest to the available balance), exactly once
    per order (the reservation remembers it was refunded).

    A captured price moves back from revenue; a price still held (the capture has not
    arrived yet) is let go the same way a release would, and the late capture then finds
    nothing to take. The ledger's own amount is the truth; a different ``amount_cents``
    in the message is logged. Does not commit.
    """
    balance = lock_balance(uow.session, customer_account_id)
    reservation = _reservation_of(uow, customer_account_id, order_id)
    if reservation is None or reservation.status not in (HELD, CAPTURED):
        log.warning("order %s refunded with no captured or held price (%s); nothing moved",
                    order_id, reservation.status if reservation else "no reservation")
        return reservation
    if amount_cents != reservation.amount_cents:
        log.warning("orders refunded %s cents for order %s; the ledger took %s and returns "
                    "that", amount_cents, order_id, reservation.amount_cents)
    reason = f"order refunded: {note}"[:300] if note else "order refunded"
    source = REVENUE if reservation.status == CAPTURED else None
    unit = (lock_unit_balance(uow.session, customer_account_id, reservation.unit_id)
            if reservation.unit_amount_cents and reservation.unit_id else None)
    _post(uow, context, balance, kind=REFUND, legs=_give_back(reservation, source),
          description=f"Refund for order {order_id}" + (f" ({note})" if note else ""),
          created_by=_created_by(context), reservation_id=reservation.id,
          order_id=order_id, unit=unit)
    reservation.mark_refunded(reason)
    refunded = _funds_event(
        uow, context, "refunded", reservation, balance,
        f"{_actor_name(context)} refunded {format_usd(reservation.amount_cents)} for order "
        f"{_short(order_id)}{_unit_share(reservation)}; "
        f"{format_usd(balance.available_cents)} available")
    _reserve_waiting_orders(uow, balance, refunded,
                            f" with the money refunded for order {_short(order_id)}")
    return reservation


# --- division (unit) funds ---------------------------------------------------------------


def unit_funds_view(customer_account_id: str, unit: UnitBalance | None,
                    unit_id: str) -> dict[str, int | str]:
    """A unit's division funds as the API shows them (zeros for a unit never funded)."""
    return {"unit_id": unit_id, "available_cents": unit.available_cents if unit else 0,
            "reserved_cents": unit.reserved_cents if unit else 0, "currency": "USD"}


def unit_funds(uow: UnitOfWork, customer_account_id: str, unit_id: str) -> dict[str, int | str]:
    unit = uow.session.execute(
        select(UnitBalance).where(UnitBalance.customer_account_id == customer_account_id,
                                  UnitBalance.unit_id == unit_id)).scalar_one_or_none()
    return unit_funds_view(customer_account_id, unit, unit_id)


def all_unit_funds(uow: UnitOfWork, customer_account_id: str, *,
                   only: tuple[str, ...] | None = None) -> list[dict[str, int | str]]:
    """Every unit the account ever funded, by unit id (``only``: of these units)."""
    query = select(UnitBalance).where(UnitBalance.customer_account_id == customer_account_id)
    if only is not None:
        query = query.where(UnitBalance.unit_id.in_(only or ("",)))
    units = uow.session.execute(query.order_by(UnitBalance.unit_id)).scalars()
    return [unit_funds_view(customer_account_id, u, u.unit_id) for u in units]


UnitBeforeCommit = Callable[[UnitOfWork, dict], None]


def move_unit_funds(uow: UnitOfWork, principal: Principal, context: Context, *, unit_id: str,
                    amount_cents: int, returning: bool,
                    before_commit: UnitBeforeCommit | None = None) -> dict[str, int | str]:
    """Allocate part of the account's available balance to a unit (``returning`` False),
    or give part of the unit's available funds back (True). 409, with nothing written,
    when the side giving the money has less than ``amount_cents`` available.

    Money the unit has reserved for open orders cannot be returned until they end.
    """
    account_id = principal.account_id
    assert account_id is not None
    balance = lock_balance(uow.session, account_id)
    unit = lock_unit_balance(uow.session, account_id, unit_id)
    source_cents = unit.available_cents if returning else balance.available_cents
    if amount_cents > source_cents:
        giver = f"unit {unit_id}" if returning else "the account"
        raise Conflict(f"{giver} has only {format_usd(source_cents)} available; "
                       f"{format_usd(amount_cents)} cannot be "
                       f"{'returned' if returning else 'allocated'}",
                       code="insufficient_funds", available_cents=source_cents)
    who = _actor_name(context)
    if returning:
        legs = [(UNIT_AVAILABLE, -amount_cents), (CUSTOMER_AVAILABLE, amount_cents)]
        kind, action = ALLOCATION_RETURN, "returned"
        description = f"Returned from unit {unit_id}'s funds"
        summary = (f"{who} returned {format_usd(amount_cents)} from unit {_short(unit_id)}'s "
                   "funds to the account")
    else:
        legs = [(CUSTOMER_AVAILABLE, -amount_cents), (UNIT_AVAILABLE, amount_cents)]
        kind, action = ALLOCATION, "allocated"
        description = f"Allocated to unit {unit_id}"
        summary = f"{who} allocated {format_usd(amount_cents)} to unit {_short(unit_id)}"
    _post(uow, context, balance, kind=kind, legs=legs, description=description,
          created_by=_created_by(context), unit=unit)
    summary += (f"; the unit has {format_usd(unit.available_cents)}, the account "
                f"{format_usd(balance.available_cents)} available")
    moved = uow.event(f"ledger.unit_funds.{action}", context, subject=("unit", unit_id),
              summary=summary,
              data={"unit_id": unit_id, "amount_cents": amount_cents,
                    "unit_available_cents": unit.available_cents,
                    "available_cents": balance.available_cents})
    if returning:  # money back in the account's pool may let waiting orders go on
        _reserve_waiting_orders(uow, balance, moved,
                                f" with the money returned from unit {_short(unit_id)}")
    view = unit_funds_view(account_id, unit, unit_id)
    if before_commit:
        before_commit(uow, view)
    uow.commit()
    return view


# --- low balance -------------------------------------------------------------------------


def low_balance_setting(uow: UnitOfWork, customer_account_id: str) -> dict[str, int | bool]:
    """The account's threshold; off (0, disabled) until someone sets it."""
    setting = uow.session.get(LowBalanceSetting, customer_account_id)
    if setting is None:
        return {"threshold_cents": 0, "enabled": False}
    return {"threshold_cents": setting.threshold_cents, "enabled": setting.enabled}


def set_low_balance(uow: UnitOfWork, principal: Principal, context: Context, *,
                    threshold_cents: int, enabled: bool) -> dict[str, int | bool]:
    """Change the threshold. Taken under the balance lock, so it is armed exactly when the
    balance is at or above the new threshold: a balance already below it warns only after
    it has been back above (a crossing, not a state)."""
    account_id = principal.account_id
    assert account_id is not None
    balance = lock_balance(uow.session, account_id)
    setting = uow.session.get(LowBalanceSetting, account_id)
    if setting is None:
        setting = LowBalanceSetting(customer_account_id=account_id)
        uow.session.add(setting)
    setting.threshold_cents, setting.enabled = threshold_cents, enabled
    setting.armed = balance.available_cents >= threshold_cents
    setting.updated_by, setting.updated_at = principal.user_id, utcnow()
    uow.session.flush()
    state = (f"warn below {format_usd(threshold_cents)}" if enabled
             else f"off (threshold {format_usd(threshold_cents)})")
    uow.event("ledger.settings.low_balance_changed", context, subject=("account", account_id),
              summary=f"{_actor_name(context)} set the low-balance warning to {state}",
              data={"threshold_cents": threshold_cents, "enabled": enabled})
    uow.commit()
    return {"threshold_cents": threshold_cents, "enabled": enabled}


def _watch_low_balance(uow: UnitOfWork, context: Context, balance: Balance) -> None:
    """After a transfer (balance locked): the first fall below the threshold emits
    ``ledger.balance.low`` and queues the e-mail; coming back at or above re-arms it."""
    setting = uow.session.get(LowBalanceSetting, balance.customer_account_id)
    if setting is None or not setting.enabled:
        return
    below = balance.available_cents < setting.threshold_cents
    if not below:
        setting.armed = True
        return
    if not setting.armed:
        return
    setting.armed = False
    available, threshold = balance.available_cents, setting.threshold_cents
    envelope = uow.event(
        "ledger.balance.low", context.with_account(balance.customer_account_id),
        subject=("account", balance.customer_account_id),
        summary=f"the balance fell below {format_usd(threshold)} after "
                f"{_actor_name(context)}'s last movement: {format_usd(available)} available",
        data={"available_cents": available, "threshold_cents": threshold})
    uow.session.add(PendingNotice(
        event_id=envelope.event_id, customer_account_id=balance.customer_account_id,
        subject=f"Chancery: your balance is low ({format_usd(available)} available)",
        body=(f"The available balance of your Chancery account is {format_usd(available)}, "
              f"below the {format_usd(threshold)} you asked to be warned about.\n\n"
              "Orders whose price the balance does not cover wait until funds are added. "
              "Add funds by card or purchase order in the Chancery portal.\n"),
        status=NOTICE_PENDING, attempts=0, next_attempt_at=utcnow(), created_at=utcnow()))
    uow.session.flush()


# --- the roster (identity's users, for the addresses of finance users and admins) --------


def apply_user_event(uow: UnitOfWork, envelope: Envelope) -> None:
    """Keep one roster row per user: the newest event wins (an older redelivery or a
    reordered message never overwrites a newer state). Does not commit."""
    if not envelope.account_id:
        log.info("%s %s has no account; not on any roster", envelope.type, envelope.event_id)
        return
    data = envelope.data
    at = datetime.fromisoformat(envelope.occurred_at.replace("Z", "+00:00"))
    active = data.get("active", True) and envelope.type != "identity.user.deactivated"
    member = uow.session.get(RosterMember, data["user_id"])
    if member is None:
        uow.session.add(RosterMember(user_id=data["user_id"],
                                     customer_account_id=envelope.account_id,
                                     email=data["email"][:254], role=data["role"][:20],
                                     active=bool(active), as_of=at))
    elif member.as_of <= at:
        member.customer_account_id = envelope.account_id
        member.email, member.role = data["email"][:254], data["role"][:20]
        member.active, member.as_of = bool(active), at
    uow.session.flush()


def finance_addresses(uow: UnitOfWork, customer_account_id: str) -> tuple[str, ...]:
    """The active finance users' and admins' addresses of the account, sorted."""
    emails = uow.session.execute(
        select(RosterMember.email).where(RosterMember.customer_account_id == customer_account_id,
                                         RosterMember.active.is_(True),
                                         RosterMember.role.in_(FINANCE_ROLES))
        .order_by(RosterMember.email)).scalars().all()
    return recipients(emails)


# --- sending notices (after commit) -------------------------------------------------------


@dataclass
class NoticeRun:
    """What one pass did: notice ids sent, failed (to retry) and skipped."""

    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30),
                timedelta(hours=2))


def send_pending_notices(uow_factory: Callable[[], UnitOfWork], mailer: Mailer | None,
                         now: datetime, *, batch_size: int = 50,
                         claim_for: timedelta = timedelta(minutes=10)) -> NoticeRun:
    """One pass over the notices due: claim each (a conditional UPDATE in its own
    transaction, so two workers never send the same one), send it, mark it sent; on an
    SMTP failure record it and retry later with a growing delay. Without a mailer
    (no SMTP host) the notices are marked skipped: the event was emitted anyway."""
    run = NoticeRun()
    worker = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with uow_factory() as uow:
        due = uow.session.execute(
            select(PendingNotice.id).where(PendingNotice.status == NOTICE_PENDING,
                                           PendingNotice.next_attempt_at <= now,
                                           or_(PendingNotice.claimed_until.is_(None),
                                               PendingNotice.claimed_until < now))
            .order_by(PendingNotice.next_attempt_at, PendingNotice.id)
            .limit(batch_size)).scalars().all()
    for notice_id in due:
        with uow_factory() as uow:
            claimed = uow.session.execute(
                update(PendingNotice).where(
                    PendingNotice.id == notice_id, PendingNotice.status == NOTICE_PENDING,
                    or_(PendingNotice.claimed_until.is_(None),
                        PendingNotice.claimed_until < now))
                .values(claimed_until=now + claim_for, last_error=f"claimed by {worker}")
            ).rowcount
            uow.commit()
        if claimed != 1:
            continue
        with uow_factory() as uow:
            notice = uow.session.get(PendingNotice, notice_id)
            assert notice is not None
            to = finance_addresses(uow, notice.customer_account_id)
            mail = Mail(to=to, subject=notice.subject, body=notice.body)
        outcome, error, delivered = NOTICE_SKIPPED, None, []
        if mailer is not None and to:
            try:
                delivered = mailer.send(mail)
                outcome = NOTICE_SENT
            except MailNotSent as exc:
                outcome, error = NOTICE_PENDING, str(exc)[:500]
        with uow_factory() as uow:
            notice = uow.session.get(PendingNotice, notice_id)
            assert notice is not None
            notice.attempts += 1
            notice.claimed_until = None
            notice.status = outcome
            if outcome == NOTICE_PENDING:
                delay = RETRY_DELAYS[min(notice.attempts, len(RETRY_DELAYS)) - 1]
                notice.next_attempt_at, notice.last_error = now + delay, error
                run.failed.append(notice_id)
                log.warning("low-balance notice %s not sent (attempt %d, retry at %s): %s",
                            notice_id, notice.attempts, notice.next_attempt_at, error)
            else:
                notice.last_error = (None if outcome == NOTICE_SENT else
                                     "no SMTP host configured" if mailer is None
                                     else "no finance user or admin to tell")
                notice.sent_at = now if outcome == NOTICE_SENT else None
                notice.sent_to = ", ".join(delivered) or None
                (run.sent if outcome == NOTICE_SENT else run.skipped).append(notice_id)
            uow.commit()
    return run
