"""The double-entry journal: balanced, append-only, and provably equal to the balances."""

from __future__ import annotations

import pytest
from chancery_ledger import journal
from chancery_ledger.handlers import verify_balances
from chancery_ledger.model import (
    CUSTOMER_AVAILABLE,
    CUSTOMER_HELD,
    DEPOSIT,
    PAYMENT_CLEARING,
    REVENUE,
    Balance,
    LedgerAccount,
    Posting,
    Transfer,
    metadata,
)
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from .conftest import order_event


@pytest.fixture
def books(login, consumer):
    """An account with a deposit, a captured order and a held one."""
    customer = login("admin")
    customer.deposit_card(10_000)
    for order_id in ("a", "b"):
        consumer.handle(order_event("orders.order.approved", customer.account_id, order_id,
                                    price_cents=2_000))
    consumer.handle(order_event("ca_signer.certificate.issued", customer.account_id, "a"))
    return customer


def test_every_transfer_sums_to_zero_over_the_four_journal_accounts(books, service):
    with service.uow() as uow:
        transfers = uow.session.execute(select(Transfer)).scalars().all()
        assert len(transfers) == 4
        for transfer in transfers:
            assert sum(p.amount_cents for p in transfer.postings) == 0
        totals = {account.kind: sum(p.amount_cents for p in uow.session.execute(
            select(Posting).where(Posting.ledger_account_id == account.id)).scalars())
            for account in uow.session.execute(select(LedgerAccount).where(
                LedgerAccount.customer_account_id == books.account_id)).scalars()}
    assert totals == {CUSTOMER_AVAILABLE: 6_000, CUSTOMER_HELD: 2_000, REVENUE: 2_000,
                      PAYMENT_CLEARING: -10_000}


def test_verify_balances_agrees_with_honest_books(books, service):
    with service.uow() as uow:
        result = verify_balances(uow)
    assert result.ok and result.accounts_checked == 1 and result.transfers_checked == 4


@pytest.mark.parametrize("column, value, what", [
    ("available_cents", 6_001, "available_cents"),
    ("reserved_cents", 1_999, "reserved_cents"),
])
@pytest.mark.books_tampered
def test_verify_balances_finds_a_tampered_balance(books, service, column, value, what):
    with service.uow() as uow:
        uow.session.execute(update(Balance).where(
            Balance.customer_account_id == books.account_id).values({column: value}))
        uow.commit()
    with service.uow() as uow:
        result = verify_balances(uow)
    assert not result.ok
    assert what in [d.what for d in result.discrepancies]


@pytest.mark.books_tampered
def test_verify_balances_finds_an_unbalanced_transfer(books, service):
    with service.uow() as uow:
        uow.session.execute(text("UPDATE postings SET amount_cents = amount_cents + 1 "
                                 "WHERE id = (SELECT min(id) FROM postings)"))
        uow.commit()
    with service.uow() as uow:
        result = verify_balances(uow)
    assert any(d.what.startswith("transfer ") for d in result.discrepancies)


@pytest.mark.parametrize("column", ["available_cents", "reserved_cents"])
def test_the_database_refuses_a_negative_balance(books, service, column):
    with service.uow() as uow:
        with pytest.raises(IntegrityError):
            uow.session.execute(update(Balance).where(
                Balance.customer_account_id == books.account_id).values({column: -1}))


def test_posting_refuses_to_overdraw_or_to_unbalance(books, service):
    with service.uow() as uow:
        balance = journal.lock_balance(uow.session, books.account_id)
        with pytest.raises(journal.InsufficientFunds):
            journal.post(uow.session, balance, kind=DEPOSIT,
                         legs=[(CUSTOMER_AVAILABLE, -6_001), (PAYMENT_CLEARING, 6_001)],
                         description="refund too much", created_by=None)
        with pytest.raises(journal.UnbalancedTransfer):
            journal.post(uow.session, balance, kind=DEPOSIT,
                         legs=[(PAYMENT_CLEARING, -100), (CUSTOMER_AVAILABLE, 99)],
                         description="lossy", created_by=None)
        assert (balance.available_cents, balance.reserved_cents) == (6_000, 2_000)


def test_transfers_and_postings_are_append_only(books, service):
    with service.uow() as uow:
        transfer = uow.session.execute(select(Transfer).limit(1)).scalar_one()
        transfer.description = "rewritten history"
        with pytest.raises(RuntimeError, match="immutable"):
            uow.session.flush()
    with service.uow() as uow:
        posting = uow.session.execute(select(Posting).limit(1)).scalar_one()
        uow.session.delete(posting)
        with pytest.raises(RuntimeError, match="immutable"):
            uow.session.flush()


def test_the_migration_creates_exactly_the_model(service):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with service.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        assert compare_metadata(context, metadata) == []
