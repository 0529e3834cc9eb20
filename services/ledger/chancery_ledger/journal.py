"""The double-entry mechanics: lock a balance, post a balanced transfer, prove the books.

Nothing outside this module writes postings or changes a :class:`Balance`. A caller
first takes :func:`lock_balance` (``SELECT ... FOR UPDATE``; on SQLite every
transaction is already ``BEGIN IMMEDIATE``, hence serial), checks what it must, then
calls :func:`post`, which refuses a transfer that does not sum to zero or would make a
customer balance negative, and updates the cached balance in the same transaction.
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
    Balance,
    LedgerAccount,
    Posting,
    Reservation,
    Transfer,
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


def peek_balance(session: Session, customer_account_id: str) -> tuple[int, int]:
    """``(available_cents, reserved_cents)`` without locking; zeros for an unseen account."""
    row = session.execute(
        select(Balance.available_cents, Balance.reserved_cents)
        .where(Balance.customer_account_id == customer_account_id)).first()
    return (row[0], row[1]) if row else (0, 0)


def _ledger_accounts(session: Session, customer_account_id: str) -> dict[str, LedgerAccount]:
    """The customer's four journal accounts, opened on first use (under the balance lock)."""
    found = {a.kind: a for a in session.execute(
        select(LedgerAccount).where(LedgerAccount.customer_account_id == customer_account_id)
    ).scalars()}
    for kind in LEDGER_ACCOUNT_KINDS:
        if kind not in found:
            account = LedgerAccount(customer_account_id=customer_account_id, kind=kind)
            session.add(account)
            found[kind] = account
    session.flush()
    return found


def post(session: Session, balance: Balance, *, kind: str, legs: Sequence[Leg],
         description: str, created_by: str | None, deposit_id: str | None = None,
         reservation_id: str | None = None, order_id: str | None = None) -> Transfer:
    """Record one balanced transfer and update the (locked) cached balance with it."""
    if sum(amount for _, amount in legs) != 0 or any(amount == 0 for _, amount in legs):
        raise UnbalancedTransfer(f"{kind}: legs {legs} do not balance")
    available = balance.available_cents + sum(a for k, a in legs if k == CUSTOMER_AVAILABLE)
    reserved = balance.reserved_cents + sum(a for k, a in legs if k == CUSTOMER_HELD)
    if available < 0 or reserved < 0:
        raise InsufficientFunds(f"{kind} of {legs} would leave available={available}, "
                                f"reserved={reserved}")
    accounts = _ledger_accounts(session, balance.customer_account_id)
    transfer = Transfer(
        customer_account_id=balance.customer_account_id, kind=kind,
        amount_cents=sum(a for _, a in legs if a > 0), description=description,
        deposit_id=deposit_id, reservation_id=reservation_id, order_id=order_id,
        available_after_cents=available, reserved_after_cents=reserved,
        created_by=created_by, created_at=utcnow(),
        postings=[Posting(ledger_account=accounts[k], amount_cents=a) for k, a in legs],
    )
    session.add(transfer)
    balance.available_cents, balance.reserved_cents = available, reserved
    balance.updated_at = utcnow()
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

    Checks that every transfer sums to zero, that each customer's four journal accounts
    sum to zero, that ``available_cents``/``reserved_cents`` equal the sums of postings
    on ``customer_available``/``customer_held``, and that ``reserved_cents`` equals the
    reservations currently held.
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
    for owner, kind, total in session.execute(
            select(LedgerAccount.customer_account_id, LedgerAccount.kind,
                   func.coalesce(func.sum(Posting.amount_cents), 0))
            .join(Posting, Posting.ledger_account_id == LedgerAccount.id, isouter=True)
            .group_by(LedgerAccount.customer_account_id, LedgerAccount.kind)):
        journal.setdefault(owner, {})[kind] = int(total)
    held: dict[str, int] = {owner: int(total) for owner, total in session.execute(
        select(Reservation.customer_account_id, func.sum(Reservation.amount_cents))
        .where(Reservation.status == HELD).group_by(Reservation.customer_account_id))}
    cached = {b.customer_account_id: b for b in session.execute(select(Balance)).scalars()}

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
            problems.append(Discrepancy(owner, "held reservations", reserved,
                                        held.get(owner, 0)))
    return Verification(accounts_checked=len(set(journal) | set(cached)),
                        transfers_checked=len(transfer_sums), discrepancies=tuple(problems))
