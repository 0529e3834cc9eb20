"""The ledger's domain: a double-entry journal, cached balances, deposits, reservations.

Every money movement is a :class:`Transfer` of :class:`Posting` rows that sum to zero
over the four journal accounts (:class:`LedgerAccount`) each customer account has:

* ``customer_available`` — money the customer may spend (credit-normal, >= 0);
* ``customer_held``      — money reserved for orders not yet issued (credit-normal, >= 0);
* ``revenue``            — money the CA operator has earned from that customer;
* ``payment_clearing``   — money received from outside (cards, purchase orders); its
  balance is the negative of everything paid in (debit-normal).

and, for each business unit the account gave money to (division funds), two more
journal accounts carrying that ``unit_id``:

* ``unit_available``     — money allocated to the unit, spent first by its orders (>= 0);
* ``unit_held``          — the unit's money reserved for its orders not yet issued (>= 0).

An allocation moves money from ``customer_available`` to ``unit_available`` (a return
moves it back); a reservation takes the unit's share from ``unit_available`` into
``unit_held`` and the rest from ``customer_available`` into ``customer_held``, and the
reservation remembers the split so that capture, release and refund undo it exactly.

Amounts are signed integer cents, credit positive. Transfers and postings are never
updated or deleted; a correction is a new transfer. :class:`Balance` caches the two
customer-facing balances, :class:`UnitBalance` those of one unit; both are updated in
the same transaction as the postings, and their CHECK constraints make a negative
balance impossible whatever the code does.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from chancery_shared.db import UtcDateTime, service_metadata
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.tables import MessagingTables
from chancery_shared.web.problems import Conflict
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

metadata = service_metadata()
messaging = MessagingTables(metadata)

CURRENCY = "USD"

# journal accounts of one customer account
CUSTOMER_AVAILABLE = "customer_available"
CUSTOMER_HELD = "customer_held"
REVENUE = "revenue"
PAYMENT_CLEARING = "payment_clearing"
LEDGER_ACCOUNT_KINDS = (CUSTOMER_AVAILABLE, CUSTOMER_HELD, REVENUE, PAYMENT_CLEARING)
# journal accounts of one business unit of a customer account (division funds)
UNIT_AVAILABLE = "unit_available"
UNIT_HELD = "unit_held"
UNIT_ACCOUNT_KINDS = (UNIT_AVAILABLE, UNIT_HELD)

# kinds of transfer (one business movement each)
DEPOSIT = "deposit"
RESERVATION = "reservation"
CAPTURE = "capture"
RELEASE = "release"
REFUND = "refund"  # a refunded order's price back to the available balance
ALLOCATION = "allocation"                # account's available money given to a unit
ALLOCATION_RETURN = "allocation_return"  # a unit's money given back to the account
TRANSFER_KINDS = (DEPOSIT, RESERVATION, CAPTURE, RELEASE, REFUND, ALLOCATION,
                  ALLOCATION_RETURN)

CARD = "card"
PURCHASE_ORDER = "purchase_order"
DEPOSIT_METHODS = (CARD, PURCHASE_ORDER)


def new_id() -> str:
    return str(uuid.uuid4())


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"




class Base(DeclarativeBase):
    metadata = metadata


class LedgerAccount(Base):
    """One journal account of one customer account, or of one of its units (see the
    module docstring). ``unit_id`` is ``""`` (not NULL, so the UNIQUE holds) for the
    customer account's own four."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("customer_account_id", "kind", "unit_id",
                         name="uq_ledger_accounts_owner_kind_unit"),
        CheckConstraint(_in("kind", LEDGER_ACCOUNT_KINDS + UNIT_ACCOUNT_KINDS), name="kind"),
        CheckConstraint(f"({_in('kind', UNIT_ACCOUNT_KINDS)}) = (unit_id <> '')",
                        name="unit_kinds_have_a_unit"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    customer_account_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[str] = mapped_column(String(36), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Balance(Base):
    """The cached balances of one customer account; the journal is the truth.

    Locked (``SELECT ... FOR UPDATE``) before every check-then-move, so concurrent
    reservations are serial per account; the CHECKs are the last line of defence.
    """

    __tablename__ = "balances"
    __table_args__ = (
        CheckConstraint("available_cents >= 0", name="available_not_negative"),
        CheckConstraint("reserved_cents >= 0", name="reserved_not_negative"),
    )
    customer_account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    available_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class UnitBalance(Base):
    """The cached division funds of one unit of one account; the journal is the truth.

    Always locked *after* the account's :class:`Balance` (one lock order, no deadlock).
    """

    __tablename__ = "unit_balances"
    __table_args__ = (
        CheckConstraint("available_cents >= 0", name="unit_available_not_negative"),
        CheckConstraint("reserved_cents >= 0", name="unit_reserved_not_negative"),
    )
    customer_account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    available_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Transfer(Base):
    """One immutable money movement: postings that sum to zero."""

    __tablename__ = "transfers"
    __table_args__ = (
        CheckConstraint(_in("kind", TRANSFER_KINDS), name="kind"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("available_after_cents >= 0", name="available_after_not_negative"),
        CheckConstraint("reserved_after_cents >= 0", name="reserved_after_not_negative"),
        Index("ix_transfers_account_time", "customer_account_id", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    customer_account_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(20))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(Text)
    deposit_id: Mapped[str | None] = mapped_column(ForeignKey("deposits.id"), index=True)
    reservation_id: Mapped[str | None] = mapped_column(ForeignKey("reservations.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    unit_id: Mapped[str | None] = mapped_column(String(36))  # the unit whose funds moved
    # the customer's balances right after this transfer (a statement line)
    available_after_cents: Mapped[int] = mapped_column(BigInteger)
    reserved_after_cents: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str | None] = mapped_column(String(200))  # user id, or "system:<svc>"
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    postings: Mapped[list[Posting]] = relationship(back_populates="transfer",
                                                   lazy="selectin", order_by="Posting.id")

    def effect_on(self, kind: str) -> int:
        """The signed change this transfer made to the customer's journal account ``kind``."""
        return sum(p.amount_cents for p in self.postings if p.ledger_account.kind == kind)


class Posting(Base):
    """One leg of a transfer: a signed amount (credit positive) on one journal account."""

    __tablename__ = "postings"
    __table_args__ = (CheckConstraint("amount_cents <> 0", name="amount_not_zero"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id"), index=True)
    ledger_account_id: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    transfer: Mapped[Transfer] = relationship(back_populates="postings")
    ledger_account: Mapped[LedgerAccount] = relationship(lazy="joined")


@event.listens_for(Transfer, "before_update")
@event.listens_for(Transfer, "before_delete")
@event.listens_for(Posting, "before_update")
@event.listens_for(Posting, "before_delete")
def _journal_is_append_only(_mapper: Any, _connection: Any, target: Any) -> None:
    raise RuntimeError(f"{type(target).__name__} rows are immutable; post a new transfer")


class Deposit(Base):
    """Money a customer pays in: by card (settled or declined at once) or purchase order.

    Of a card only the brand and the last four digits are ever kept.
    """

    __tablename__ = "deposits"
    __table_args__ = (
        CheckConstraint(_in("method", DEPOSIT_METHODS), name="method"),
        CheckConstraint(_in("status", ("pending", "settled", "declined")), name="status"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("card_last4 IS NULL OR length(card_last4) = 4", name="last4"),
        CheckConstraint("invoice_number IS NULL OR method = 'purchase_order'",
                        name="invoices_are_for_purchase_orders"),
        Index("ix_deposits_account_time", "customer_account_id", "created_at"),
        UniqueConstraint("customer_account_id", "invoice_number",
                         name="uq_deposits_account_invoice_number"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    customer_account_id: Mapped[str] = mapped_column(String(36))
    method: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    po_number: Mapped[str | None] = mapped_column(String(64))
    # a purchase order's invoice: sequential per account, gap-free (see InvoiceCounter)
    invoice_number: Mapped[str | None] = mapped_column(String(40))
    due_date: Mapped[date | None] = mapped_column(Date)
    processor_reference: Mapped[str | None] = mapped_column(String(100))
    decline_code: Mapped[str | None] = mapped_column(String(50))
    decline_reason: Mapped[str | None] = mapped_column(String(300))
    requested_by: Mapped[str] = mapped_column(String(36))
    requested_by_name: Mapped[str] = mapped_column(String(200))
    settled_by: Mapped[str | None] = mapped_column(String(36))
    settled_by_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    receipt: Mapped[Receipt | None] = relationship(back_populates="deposit", lazy="selectin",
                                                   uselist=False)

    @property
    def receipt_id(self) -> str | None:
        return self.receipt.id if self.receipt else None

    @property
    def card(self) -> dict[str, str] | None:
        if self.method != CARD or self.card_last4 is None:
            return None
        return {"brand": self.card_brand or "unknown", "last4": self.card_last4}

    def describe_method(self) -> str:
        if self.method == CARD:
            return f"{(self.card_brand or 'card').title()} card ending {self.card_last4}"
        return f"purchase order {self.po_number}"

    def mark_settled(self, *, by_id: str, by_name: str) -> None:
        if self.status != "pending":
            raise Conflict(f"deposit {self.id} is {self.status}; only a pending deposit can be "
                           "settled", code="deposit_not_pending", status_now=self.status)
        self.status = "settled"
        self.settled_by, self.settled_by_name = by_id, by_name
        self.settled_at = utcnow()

    def mark_declined(self, code: str, reason: str) -> None:
        if self.status != "pending":
            raise Conflict(f"deposit {self.id} is {self.status}", code="deposit_not_pending")
        self.status = "declined"
        self.decline_code, self.decline_reason = code, reason


class InvoiceCounter(Base):
    """The last invoice number given to an account's purchase orders.

    Locked ``FOR UPDATE`` while the next number is taken and the deposit written in the
    same transaction, so numbers are gap-free and never shared under concurrency.
    """

    __tablename__ = "invoice_counters"
    __table_args__ = (CheckConstraint("last_number >= 0", name="last_number_not_negative"),)
    customer_account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger, default=0)


class Receipt(Base):
    """The proof of payment of one settled deposit (immutable once issued)."""

    __tablename__ = "receipts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    customer_account_id: Mapped[str] = mapped_column(String(36), index=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), unique=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deposit: Mapped[Deposit] = relationship(back_populates="receipt", lazy="joined")


# reservation statuses
AWAITING_FUNDS = "awaiting_funds"  # the order is approved, the balance was short
HELD = "held"                      # the price is moved from available to held
CAPTURED = "captured"              # the certificate was issued: held -> revenue
RELEASED = "released"              # the order ended without a certificate: held -> available
WITHDRAWN = "withdrawn"            # the order ended before anything was ever held
REFUNDED = "refunded"              # the order was refunded: its price is available again
RESERVATION_STATUSES = (AWAITING_FUNDS, HELD, CAPTURED, RELEASED, WITHDRAWN, REFUNDED)


class Reservation(Base):
    """The ledger's side of one order: at most one per order, whatever the redeliveries.

    The unique ``order_id`` is what makes reserve, capture and release happen exactly
    once per order even when the same business fact arrives as two different messages.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint(_in("status", RESERVATION_STATUSES), name="status"),
        CheckConstraint("amount_cents >= 0", name="amount_not_negative"),
        CheckConstraint("unit_amount_cents >= 0 AND unit_amount_cents <= amount_cents",
                        name="unit_share_within_amount"),
        CheckConstraint("unit_amount_cents = 0 OR unit_id IS NOT NULL",
                        name="unit_share_has_a_unit"),
        Index("ix_reservations_waiting", "customer_account_id", "status", "requested_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_account_id: Mapped[str] = mapped_column(String(36))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    # the share of amount_cents taken from the unit's funds (the rest: the account's)
    unit_amount_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(20))
    unit_id: Mapped[str | None] = mapped_column(String(36))
    product: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    held_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    close_reason: Mapped[str | None] = mapped_column(String(300))

    @property
    def account_amount_cents(self) -> int:
        """The share of the price taken from the account's own available balance."""
        return self.amount_cents - self.unit_amount_cents

    def _move(self, allowed: tuple[str, ...], to: str) -> None:
        if self.status not in allowed:
            raise Conflict(f"reservation for order {self.order_id} is {self.status}",
                           code="reservation_state")
        self.status = to

    def mark_held(self) -> None:
        self._move((AWAITING_FUNDS,), HELD)
        self.held_at = utcnow()

    def mark_captured(self) -> None:
        self._move((HELD,), CAPTURED)
        self.closed_at = utcnow()

    def mark_released(self, reason: str | None) -> None:
        self._move((HELD,), RELEASED)
        self.closed_at, self.close_reason = utcnow(), reason

    def mark_withdrawn(self, reason: str | None) -> None:
        self._move((AWAITING_FUNDS,), WITHDRAWN)
        self.closed_at, self.close_reason = utcnow(), reason

    def mark_refunded(self, reason: str | None) -> None:
        self._move((HELD, CAPTURED), REFUNDED)
        self.closed_at, self.close_reason = utcnow(), reason


class LowBalanceSetting(Base):
    """An account's low-balance warning: a threshold on the available balance.

    ``armed`` is true while the balance is at or above the threshold: the first
    transfer that takes it below emits ``ledger.balance.low`` and disarms it; a
    transfer that brings it back re-arms it. Changed only under the balance lock.
    """

    __tablename__ = "low_balance_settings"
    __table_args__ = (CheckConstraint("threshold_cents >= 0", name="threshold_not_negative"),)
    customer_account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    threshold_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    armed: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_by: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RosterMember(Base):
    """Who may hear about an account's money: a read model of identity's users
    (``identity.user.*``), kept only for the addresses of finance users and admins."""

    __tablename__ = "roster"
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    customer_account_id: Mapped[str] = mapped_column(String(36), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    as_of: Mapped[datetime] = mapped_column(UtcDateTime)  # the newest event applied


NOTICE_PENDING, NOTICE_SENT, NOTICE_SKIPPED = "pending", "sent", "skipped"


class PendingNotice(Base):
    """An e-mail to send after the transaction that decided it committed (an outbox).

    Written with the event that caused it; a background pass claims it, sends it and
    marks it sent, or records the failure and retries later. ``event_id`` is the cause
    (one notice per low-balance crossing).
    """

    __tablename__ = "pending_notices"
    __table_args__ = (
        CheckConstraint(_in("status", (NOTICE_PENDING, NOTICE_SENT, NOTICE_SKIPPED)),
                        name="status"),
        Index("ix_pending_notices_due", "status", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    customer_account_id: Mapped[str] = mapped_column(String(36))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default=NOTICE_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    sent_to: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


def format_usd(cents: int) -> str:
    """``123456`` -> ``$1,234.56`` (for summaries and receipts; never for arithmetic)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"
