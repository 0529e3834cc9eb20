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
from collections.abc import Callable
from datetime import datetime

from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context, Envelope, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.pagination import decode_cursor, encode_cursor
from chancery_shared.web.problems import InvalidField, NotFound, Problem
from sqlalchemy import and_, or_, select

from chancery_ledger import journal
from chancery_ledger.cards import CardDetails
from chancery_ledger.journal import lock_balance, peek_balance, verify_balances
from chancery_ledger.model import (
    AWAITING_FUNDS,
    CAPTURE,
    CAPTURED,
    CARD,
    CUSTOMER_AVAILABLE,
    CUSTOMER_HELD,
    DEPOSIT,
    HELD,
    PAYMENT_CLEARING,
    PURCHASE_ORDER,
    REFUND,
    RELEASE,
    RESERVATION,
    REVENUE,
    WITHDRAWN,
    Balance,
    Deposit,
    Receipt,
    Reservation,
    Transfer,
    format_usd,
    new_id,
)
from chancery_ledger.payments import PaymentProcessor, ProcessorUnavailable

__all__ = ["verify_balances"]  # re-exported: the proof that balances equal the journal
log = logging.getLogger(__name__)
SERVICE = "ledger"
BeforeCommit = Callable[[UnitOfWork, Deposit], None]


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
    journal.post(uow.session, balance, kind=DEPOSIT,
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


def deposit_by_purchase_order(uow: UnitOfWork, principal: Principal, context: Context, *,
                              amount_cents: int, po_number: str,
                              before_commit: BeforeCommit | None = None) -> Deposit:
    """Record a purchase order; it credits nothing until the platform operator settles it."""
    assert principal.account_id is not None
    deposit = Deposit(customer_account_id=principal.account_id, method=PURCHASE_ORDER,
                      status="pending", amount_cents=amount_cents, po_number=po_number.strip(),
                      requested_by=principal.user_id, requested_by_name=principal.name,
                      created_at=utcnow(), receipt=None)
    uow.session.add(deposit)
    uow.session.flush()
    _deposit_event(uow, context, deposit,
                   f"{_actor_name(context)} submitted purchase order {deposit.po_number} for "
                   f"{format_usd(amount_cents)}; it is pending until the operator settles it")
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


def _hold(uow: UnitOfWork, context: Context, balance: Balance, reservation: Reservation,
          why: str = "") -> None:
    if reservation.amount_cents:
        journal.post(uow.session, balance, kind=RESERVATION,
                     legs=[(CUSTOMER_AVAILABLE, -reservation.amount_cents),
                           (CUSTOMER_HELD, reservation.amount_cents)],
                     description=f"Reserved for order {reservation.order_id}",
                     created_by=_created_by(context), reservation_id=reservation.id,
                     order_id=reservation.order_id)
    reservation.mark_held()
    _funds_event(uow, context, "reserved", reservation, balance,
                 f"{_actor_name(context)} reserved {format_usd(reservation.amount_cents)} for "
                 f"order {_short(reservation.order_id)}{why}; "
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

    Does nothing when the order already has a reservation (any status), so a second
    ``approved`` for the same order reserves nothing. Does not commit.
    """
    balance = lock_balance(uow.session, customer_account_id)
    existing = _reservation_of(uow, customer_account_id, order_id)
    if existing is not None:
        log.info("order %s already has a %s reservation; nothing to do", order_id,
                 existing.status)
        return existing
    reservation = Reservation(order_id=order_id, customer_account_id=customer_account_id,
                              amount_cents=amount_cents, status=AWAITING_FUNDS,
                              unit_id=unit_id, product=product, requested_at=utcnow())
    uow.session.add(reservation)
    uow.session.flush()
    if amount_cents <= balance.available_cents:
        _hold(uow, context, balance, reservation)
    else:
        _funds_event(uow, context, "declined", reservation, balance,
                     f"{_actor_name(context)} could not reserve {format_usd(amount_cents)} for "
                     f"order {_short(order_id)}: only {format_usd(balance.available_cents)} "
                     "available; the order waits for a deposit")
    return reservation


def _reserve_waiting_orders(uow: UnitOfWork, balance: Balance, cause: Envelope,
                            why: str) -> None:
    """After money became available (a deposit settled, a reservation was released): hold
    every waiting order the balance now covers, oldest first.

    An order too expensive for what is left is skipped (it keeps waiting) and younger,
    cheaper orders still get their money.
    """
    waiting = uow.session.execute(
        select(Reservation).where(Reservation.customer_account_id == balance.customer_account_id,
                                  Reservation.status == AWAITING_FUNDS)
        .order_by(Reservation.requested_at, Reservation.id)).scalars().all()
    for reservation in waiting:
        if reservation.amount_cents <= balance.available_cents:
            context = Context(actor=Actor.service(SERVICE), account_id=balance.customer_account_id,
                              correlation_id=reservation.order_id, causation_id=cause.event_id)
            _hold(uow, context, balance, reservation, why=why)


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
    if reservation.amount_cents:
        journal.post(uow.session, balance, kind=CAPTURE,
                     legs=[(CUSTOMER_HELD, -reservation.amount_cents),
                           (REVENUE, reservation.amount_cents)],
                     description=f"Charged for order {order_id} (certificate issued)",
                     created_by=_created_by(context), reservation_id=reservation.id,
                     order_id=order_id)
    reservation.mark_captured()
    _funds_event(uow, context, "captured", reservation, balance,
                 f"{_actor_name(context)} charged {format_usd(reservation.amount_cents)} for "
                 f"order {_short(order_id)} now that its certificate is issued")
    return reservation


def release_for_order(uow: UnitOfWork, context: Context, *, customer_account_id: str,
                      order_id: str, reason: str | None) -> Reservation:
    """The order ended without a certificate: give back what was held, once.

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
                                  amount_cents=0, status=WITHDRAWN, requested_at=utcnow(),
                                  closed_at=utcnow(), close_reason=reason)
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
        if reservation.amount_cents:
            journal.post(uow.session, balance, kind=RELEASE,
                         legs=[(CUSTOMER_HELD, -reservation.amount_cents),
                               (CUSTOMER_AVAILABLE, reservation.amount_cents)],
                         description=f"Released for order {order_id}"
                                     + (f" ({reason})" if reason else ""),
                         created_by=_created_by(context), reservation_id=reservation.id,
                         order_id=order_id)
        reservation.mark_released(reason)
        released = _funds_event(
            uow, context, "released", reservation, balance,
            f"{who} released {format_usd(reservation.amount_cents)} held for order "
            f"{_short(order_id)} ({reason or 'order ended'}); "
            f"{format_usd(balance.available_cents)} available")
        _reserve_waiting_orders(uow, balance, released,
                                f" with the money released by order {_short(order_id)}")
    return reservation


def refund_for_order(uow: UnitOfWork, context: Context, *, customer_account_id: str,
                     order_id: str, amount_cents: int, note: str | None) -> Reservation | None:
    """A refunded order: what the ledger took for it returns to the available balance,
    exactly once per order (the reservation remembers it was refunded).

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
    if reservation.amount_cents:
        source = REVENUE if reservation.status == CAPTURED else CUSTOMER_HELD
        journal.post(uow.session, balance, kind=REFUND,
                     legs=[(source, -reservation.amount_cents),
                           (CUSTOMER_AVAILABLE, reservation.amount_cents)],
                     description=f"Refund for order {order_id}"
                                 + (f" ({note})" if note else ""),
                     created_by=_created_by(context), reservation_id=reservation.id,
                     order_id=order_id)
    reservation.mark_refunded(reason)
    refunded = _funds_event(
        uow, context, "refunded", reservation, balance,
        f"{_actor_name(context)} refunded {format_usd(reservation.amount_cents)} for order "
        f"{_short(order_id)}; {format_usd(balance.available_cents)} available")
    _reserve_waiting_orders(uow, balance, refunded,
                            f" with the money refunded for order {_short(order_id)}")
    return reservation
