"""The double-entry mechanics: lock a balance, post a balanced transfer, prove the books.

Nothing outside this module writes postings or changes a :class:`Balance`. A caller
first takes :func:`lock_balance` (``SELECT ... FOR UPDATE``; on SQLite every
transaction is already ``BEGIN IMMEDIATE``, hence serial), checks what it must, then
calls :func:`post`, which refuses a transfer that does not sum to zero or would make a
customer balance negative, and updates the cached balance in the same transaction.

A transfer that touches a unit's division funds also takes :func:`lock_unit_balance`,
always after the account's balance (one lock order: no deadlocks), and passes it to
:func:`post`; a transfer touches at most one unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from chancery_ledger.model import (
    CUSTOMER_AVAILABLE,
    CUSTOMER_HELD,
    HELD,
    LEDGER_ACCOUNT_KINDS,
    UNIT_ACCOUNT_KINDS,
    UNIT_AVAILABLE,
    UNIT_HELD,
    Balance,
    InvoiceCounter,
    LedgerAccount,
    Posting,
    Reservation,
    Transfer,
    UnitBalance,
)

Leg = tuple[str, int]  # (journal account kind, signed cents, credit positive)


class InsufficientFunds(Exception):
    """The transfer would take a customer balance below zero."""


class UnbalancedTransfer(Exception):
    """A programming error: the legs of a transfer do not sum to zero."""


def _insert_ignoring_conflict(session: Session, table, values: dict) -> None:  # noqa: ANN001
    """Insert one row unless it exists (safe when two transactions race to create it)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        statement = insert(table).values(**values)
    session.execute(statement)


def lock_balance(session: Session, customer_account_id: str) -> Balance:
    """The account's balance row, created at zero if new, locked until the transaction ends."""
    _insert_ignoring_conflict(session, Balance.__table__, {
        "customer_account_id": customer_account_id, "available_cents": 0,
        "reserved_cents": 0, "updated_at": utcnow()})
    return session.execute(
        select(Balance).where(Balance.customer_account_id == customer_account_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one()


def lock_unit_balance(session: Session, customer_account_id: str, unit_id: str) -> UnitBalance:
    """A unit's division funds, created at zero if new, locked until the transaction ends.

    Take the account's :func:`lock_balance` first.
    """
    _insert_ignoring_conflict(session, UnitBalance.__table__, {
        "customer_account_id": customer_account_id, "unit_id": unit_id,
        "available_cents": 0, "reserved_cents": 0, "updated_at": utcnow()})
    return session.execute(
        select(UnitBalance).where(UnitBalance.customer_account_id == customer_account_id,
                                  UnitBalance.unit_id == unit_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one()


def find_unit_balance(session: Session, customer_account_id: str,
                      unit_id: str) -> UnitBalance | None:
    """A unit's division funds, locked, or None when the account never gave it any
    (so orders of units without funds create no rows). Take the account's lock first."""
    return session.execute(
        select(UnitBalance).where(UnitBalance.customer_account_id == customer_account_id,
                                  UnitBalance.unit_id == unit_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()


def next_invoice_number(session: Session, customer_account_id: str) -> int:
    """The account's next invoice number (1, 2, 3...): its counter row is locked until
    the transaction ends, so concurrent purchase orders queue, and a rolled-back one
    gives its number back: no gaps, no repeats."""
    _insert_ignoring_conflict(session, InvoiceCounter.__table__, {
        "customer_account_id": customer_account_id, "last_number": 0})
    counter = session.execute(
        select(InvoiceCounter).where(InvoiceCounter.customer_account_id == customer_account_id)
        .with_for_update().execution_options(populate_existing=True)).scalar_one()
    counter.last_number += 1
    session.flush()
    return counter.last_number


def peek_balance(session: Session, customer_account_id: str) -> tuple[int, int]:
    """``(available_cents, reserved_cents)`` without locking; zeros for an unseen account."""
    row = session.execute(
        select(Balance.available_cents, Balance.reserved_cents)
        .where(Balance.customer_account_id == customer_account_id)).first()
    return (row[0], row[1]) if row else (0, 0)


def _ledger_accounts(session: Session, customer_account_id: str) -> dict[str, LedgerAccount]:
    """The customer's four journal accounts, opened on first use (under the balance lock)."""
    found = {a.kind: a for a in session.execute(
        select(LedgerAccount).where(LedgerAccount.customer_account_id == customer_account_id,
                                    LedgerAccount.unit_id == "")
    ).scalars()}
    for kind in LEDGER_ACCOUNT_KINDS:
        if kind not in found:
            account = LedgerAccount(customer_account_id=customer_account_id, kind=kind,
                                    unit_id="")
            session.add(account)
            found[kind] = account
    session.flush()
    return found


def _unit_ledger_accounts(session: Session, unit: UnitBalance) -> dict[str, LedgerAccount]:
    """The unit's two journal accounts, opened on first use (under the unit's lock)."""
    found = {a.kind: a for a in session.execute(
        select(LedgerAccount).where(
            LedgerAccount.customer_account_id == unit.customer_account_id,
            LedgerAccount.unit_id == unit.unit_id)).scalars()}
    for kind in UNIT_ACCOUNT_KINDS:
        if kind not in found:
            account = LedgerAccount(customer_account_id=unit.customer_account_id, kind=kind,
                                    unit_id=unit.unit_id)
            session.add(account)
            found[kind] = account
    session.flush()
    return found


def post(session: Session, balance: Balance, *, kind: str, legs: Sequence[Leg],
         description: str, created_by: str | None, deposit_id: str | None = None,
         reservation_id: str | None = None, order_id: str | None = None,
         unit: UnitBalance | None = None) -> Transfer:
    """Record one balanced transfer and update the (locked) cached balances with it.

    Legs on ``unit_available``/``unit_held`` belong to ``unit`` (locked by the caller).
    """
    if not legs or sum(amount for _, amount in legs) != 0 or any(a == 0 for _, a in legs):
        raise UnbalancedTransfer(f"{kind}: legs {legs} do not balance")
    unit_legs = [k for k, _ in legs if k in UNIT_ACCOUNT_KINDS]
    if unit_legs and (unit is None
                      or unit.customer_account_id != balance.customer_account_id):
        raise UnbalancedTransfer(f"{kind}: unit legs {unit_legs} without the account's unit")
    available = balance.available_cents + sum(a for k, a in legs if k == CUSTOMER_AVAILABLE)
    reserved = balance.reserved_cents + sum(a for k, a in legs if k == CUSTOMER_HELD)
    if available < 0 or reserved < 0:
        raise InsufficientFunds(f"{kind} of {legs} would leave available={available}, "
                                f"reserved={reserved}")
    unit_available = unit_reserved = 0
    if unit is not None:
        unit_available = unit.available_cents + sum(a for k, a in legs if k == UNIT_AVAILABLE)
        unit_reserved = unit.reserved_cents + sum(a for k, a in legs if k == UNIT_HELD)
        if unit_available < 0 or unit_reserved < 0:
            raise InsufficientFunds(f"{kind} of {legs} would leave unit {unit.unit_id} "
                                    f"available={unit_available}, reserved={unit_reserved}")
    accounts = _ledger_accounts(session, balance.customer_account_id)
    if unit_legs:
        assert unit is not None
        accounts = {**accounts, **_unit_ledger_accounts(session, unit)}
    transfer = Transfer(
        customer_account_id=balance.customer_account_id, kind=kind,
        amount_cents=sum(a for _, a in legs if a > 0), description=description,
        deposit_id=deposit_id, reservation_id=reservation_id, order_id=order_id,
        unit_id=unit.unit_id if unit_legs and unit is not None else None,
        available_after_cents=available, reserved_after_cents=reserved,
        created_by=created_by, created_at=utcnow(),
        postings=[Posting(ledger_account=accounts[k], amount_cents=a) for k, a in legs],
    )
    session.add(transfer)
    balance.available_cents, balance.reserved_cents = available, reserved
    balance.updated_at = utcnow()
    if unit is not None and unit_legs:
        unit.available_cents, unit.reserved_cents = unit_available, unit_reserved
        unit.updated_at = utcnow()
    session.flush()
    return transfer


# --- proving the books -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Discrepancy:
    customer_account_id: str | None
    what: str
    expected: int | str
    found: int | str


@dataclasses.dataclass(frozen=True)
class Verification:
    """The result of :func:`verify_balances`; ``ok`` only when nothing disagrees."""

    accounts_checked: int
    transfers_checked: int
    discrepancies: tuple[Discrepancy, ...]

    @property
    def ok(self) -> bool:
        return not self.discrepancies


def verify_balances(uow: UnitOfWork) -> Verification:
    """Prove that the cached balances and held reservations equal what the journal says.

    Checks that every transfer sums to zero, that each customer's journal accounts (its
    units' included) sum to zero, that ``available_cents``/``reserved_cents`` equal the
    sums of postings on ``customer_available``/``customer_held``, that every unit's
    cached division funds equal the sums on its ``unit_available``/``unit_held``, and
    that the reserved amounts equal the reservations currently held (each share where
    it was taken from).
    """
    session = uow.session
    problems: list[Discrepancy] = []
    transfer_sums = session.execute(
        select(Posting.transfer_id, func.sum(Posting.amount_cents))
        .group_by(Posting.transfer_id)).all()
    transfers_without_postings = session.execute(
        select(func.count()).select_from(Transfer)
        .where(~Transfer.id.in_(select(Posting.transfer_id)))).scalar_one()
    for transfer_id, total in transfer_sums:
        if total != 0:
            problems.append(Discrepancy(None, f"transfer {transfer_id} sums", 0, int(total)))
    if transfers_without_postings:
        problems.append(Discrepancy(None, "transfers without postings", 0,
                                    int(transfers_without_postings)))

    journal: dict[str, dict[str, int]] = {}
    unit_journal: dict[tuple[str, str], dict[str, int]] = {}
    for owner, unit_id, kind, total in session.execute(
            select(LedgerAccount.customer_account_id, LedgerAccount.unit_id, LedgerAccount.kind,
                   func.coalesce(func.sum(Posting.amount_cents), 0))
            .join(Posting, Posting.ledger_account_id == LedgerAccount.id, isouter=True)
            .group_by(LedgerAccount.customer_account_id, LedgerAccount.unit_id,
                      LedgerAccount.kind)):
        if unit_id:
            unit_journal.setdefault((owner, unit_id), {})[kind] = int(total)
            journal.setdefault(owner, {})
            journal[owner][f"unit:{kind}"] = journal[owner].get(f"unit:{kind}", 0) + int(total)
        else:
            journal.setdefault(owner, {})[kind] = int(total)
    held: dict[str, int] = {}
    unit_held: dict[tuple[str, str], int] = {}
    for owner, unit_id, total, unit_share in session.execute(
            select(Reservation.customer_account_id, Reservation.unit_id,
                   func.sum(Reservation.amount_cents), func.sum(Reservation.unit_amount_cents))
            .where(Reservation.status == HELD)
            .group_by(Reservation.customer_account_id, Reservation.unit_id)):
        held[owner] = held.get(owner, 0) + int(total) - int(unit_share)
        if unit_id and unit_share:
            unit_held[(owner, unit_id)] = int(unit_share)
    cached = {b.customer_account_id: b for b in session.execute(select(Balance)).scalars()}
    cached_units = {(u.customer_account_id, u.unit_id): u
                    for u in session.execute(select(UnitBalance)).scalars()}

    for owner in sorted(set(journal) | set(cached) | set(held)):
        sums = journal.get(owner, {})
        balance = cached.get(owner)
        if sum(sums.values()) != 0:
            problems.append(Discrepancy(owner, "journal accounts sum", 0, sum(sums.values())))
        available = balance.available_cents if balance else 0
        reserved = balance.reserved_cents if balance else 0
        if available != sums.get(CUSTOMER_AVAILABLE, 0):
            problems.append(Discrepancy(owner, "available_cents",
                                        sums.get(CUSTOMER_AVAILABLE, 0), available))
        if reserved != sums.get(CUSTOMER_HELD, 0):
            problems.append(Discrepancy(owner, "reserved_cents",
                                        sums.get(CUSTOMER_HELD, 0), reserved))
        if reserved != held.get(owner, 0):
            problems.append(Discrepancy(owner, "held reservations", held.get(owner, 0),
                                        reserved))
    for owner, unit_id in sorted(set(unit_journal) | set(cached_units) | set(unit_held)):
        sums = unit_journal.get((owner, unit_id), {})
        unit = cached_units.get((owner, unit_id))
        available = unit.available_cents if unit else 0
        reserved = unit.reserved_cents if unit else 0
        if available != sums.get(UNIT_AVAILABLE, 0):
            problems.append(Discrepancy(owner, f"unit {unit_id} available_cents",
                                        sums.get(UNIT_AVAILABLE, 0), available))
        if reserved != sums.get(UNIT_HELD, 0):
            problems.append(Discrepancy(owner, f"unit {unit_id} reserved_cents",
                                        sums.get(UNIT_HELD, 0), reserved))
        if reserved != unit_held.get((owner, unit_id), 0):
            problems.append(Discrepancy(owner, f"unit {unit_id} held reservations",
                                        unit_held.get((owner, unit_id), 0), reserved))
    return Verification(accounts_checked=len(set(journal) | set(cached)),
                        transfers_checked=len(transfer_sums), discrepancies=tuple(problems))
