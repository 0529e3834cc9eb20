"""unit funds, purchase-order invoices, low balance

Revision ID: 520e69af916e
Revises: 3b9e4f1a7c2d
Create Date: 2026-11-26 21:19:33.028674

Division funds: unit journal accounts (``ledger_accounts.unit_id``, '' for the account's
own four), cached ``unit_balances``, the reservation's unit share, the allocation
transfer kinds. Invoices: ``deposits.invoice_number``/``due_date`` and a per-account
``invoice_counters`` row. Low balance: ``low_balance_settings``, the ``roster`` of
identity's users and the ``pending_notices`` outbox of e-mails.

Changing CHECKs on SQLite rebuilds tables that others reference, so (as in the refunds
revision) the rebuild runs with foreign keys off, then ``PRAGMA foreign_key_check``.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '520e69af916e'
down_revision: Union[str, Sequence[str], None] = '3b9e4f1a7c2d'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


OLD_ACCOUNT_KINDS = ("kind IN ('customer_available', 'customer_held', 'revenue', "
                     "'payment_clearing')")
NEW_ACCOUNT_KINDS = ("kind IN ('customer_available', 'customer_held', 'revenue', "
                     "'payment_clearing', 'unit_available', 'unit_held')")
UNIT_KINDS_HAVE_A_UNIT = "(kind IN ('unit_available', 'unit_held')) = (unit_id <> '')"
OLD_TRANSFER_KINDS = "kind IN ('deposit', 'reservation', 'capture', 'release', 'refund')"
NEW_TRANSFER_KINDS = ("kind IN ('deposit', 'reservation', 'capture', 'release', 'refund', "
                      "'allocation', 'allocation_return')")


def _with_foreign_keys_off(work) -> None:  # noqa: ANN001
    """Run ``work`` (batch rebuilds) with SQLite's foreign keys off, then prove them."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        work()
        return
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    bind.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        work()
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the rebuild broke foreign keys: {broken[:5]}")
        bind.exec_driver_sql("COMMIT")
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
        bind.exec_driver_sql("BEGIN IMMEDIATE")


def _alter_existing_tables() -> None:
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invoice_number', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('due_date', sa.Date(), nullable=True))
        batch_op.create_unique_constraint('uq_deposits_account_invoice_number', ['customer_account_id', 'invoice_number'])
        batch_op.create_check_constraint(op.f('ck_deposits_invoices_are_for_purchase_orders'),
                                         "invoice_number IS NULL OR method = 'purchase_order'")

    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unit_id', sa.String(length=36), server_default='', nullable=False))
        batch_op.drop_constraint(batch_op.f('uq_ledger_accounts_owner_kind'), type_='unique')
        batch_op.create_unique_constraint('uq_ledger_accounts_owner_kind_unit', ['customer_account_id', 'kind', 'unit_id'])
        batch_op.drop_constraint(op.f('ck_ledger_accounts_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_ledger_accounts_kind'), NEW_ACCOUNT_KINDS)
        batch_op.create_check_constraint(op.f('ck_ledger_accounts_unit_kinds_have_a_unit'),
                                         UNIT_KINDS_HAVE_A_UNIT)

    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unit_amount_cents', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_check_constraint(
            op.f('ck_reservations_unit_share_within_amount'),
            "unit_amount_cents >= 0 AND unit_amount_cents <= amount_cents")
        batch_op.create_check_constraint(op.f('ck_reservations_unit_share_has_a_unit'),
                                         "unit_amount_cents = 0 OR unit_id IS NOT NULL")

    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unit_id', sa.String(length=36), nullable=True))
        batch_op.drop_constraint(op.f('ck_transfers_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_transfers_kind'), NEW_TRANSFER_KINDS)


def _restore_existing_tables() -> None:
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_transfers_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_transfers_kind'), OLD_TRANSFER_KINDS)
        batch_op.drop_column('unit_id')

    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_reservations_unit_share_has_a_unit'), type_='check')
        batch_op.drop_constraint(op.f('ck_reservations_unit_share_within_amount'),
                                 type_='check')
        batch_op.drop_column('unit_amount_cents')

    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_ledger_accounts_unit_kinds_have_a_unit'),
                                 type_='check')
        batch_op.drop_constraint(op.f('ck_ledger_accounts_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_ledger_accounts_kind'), OLD_ACCOUNT_KINDS)
        batch_op.drop_constraint('uq_ledger_accounts_owner_kind_unit', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_ledger_accounts_owner_kind'), ['customer_account_id', 'kind'])
        batch_op.drop_column('unit_id')

    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_deposits_invoices_are_for_purchase_orders'),
                                 type_='check')
        batch_op.drop_constraint('uq_deposits_account_invoice_number', type_='unique')
        batch_op.drop_column('due_date')
        batch_op.drop_column('invoice_number')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('invoice_counters',
    sa.Column('customer_account_id', sa.String(length=36), nullable=False),
    sa.Column('last_number', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('last_number >= 0', name=op.f('ck_invoice_counters_last_number_not_negative')),
    sa.PrimaryKeyConstraint('customer_account_id', name=op.f('pk_invoice_counters'))
    )
    op.create_table('low_balance_settings',
    sa.Column('customer_account_id', sa.String(length=36), nullable=False),
    sa.Column('threshold_cents', sa.BigInteger(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('armed', sa.Boolean(), nullable=False),
    sa.Column('updated_by', sa.String(length=36), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('threshold_cents >= 0', name=op.f('ck_low_balance_settings_threshold_not_negative')),
    sa.PrimaryKeyConstraint('customer_account_id', name=op.f('pk_low_balance_settings'))
    )
    op.create_table('pending_notices',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('customer_account_id', sa.String(length=36), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('sent_to', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'skipped')", name=op.f('ck_pending_notices_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_notices')),
    sa.UniqueConstraint('event_id', name=op.f('uq_pending_notices_event_id'))
    )
    with op.batch_alter_table('pending_notices', schema=None) as batch_op:
        batch_op.create_index('ix_pending_notices_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('roster',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('customer_account_id', sa.String(length=36), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_roster'))
    )
    with op.batch_alter_table('roster', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roster_customer_account_id'), ['customer_account_id'], unique=False)

    op.create_table('unit_balances',
    sa.Column('customer_account_id', sa.String(length=36), nullable=False),
    sa.Column('unit_id', sa.String(length=36), nullable=False),
    sa.Column('available_cents', sa.BigInteger(), nullable=False),
    sa.Column('reserved_cents', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('available_cents >= 0', name=op.f('ck_unit_balances_unit_available_not_negative')),
    sa.CheckConstraint('reserved_cents >= 0', name=op.f('ck_unit_balances_unit_reserved_not_negative')),
    sa.PrimaryKeyConstraint('customer_account_id', 'unit_id', name=op.f('pk_unit_balances'))
    )
    _with_foreign_keys_off(_alter_existing_tables)




def downgrade() -> None:
    """Downgrade schema (refuses while unit funds or allocations exist: their rows would
    break the old checks)."""
    _with_foreign_keys_off(_restore_existing_tables)
    op.drop_table('unit_balances')
    with op.batch_alter_table('roster', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roster_customer_account_id'))
    op.drop_table('roster')
    with op.batch_alter_table('pending_notices', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_notices_due')
    op.drop_table('pending_notices')
    op.drop_table('low_balance_settings')
    op.drop_table('invoice_counters')
