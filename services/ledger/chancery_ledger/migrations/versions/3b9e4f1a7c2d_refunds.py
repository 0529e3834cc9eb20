"""refunds: a refund transfer kind and a refunded reservation status

Revision ID: 3b9e4f1a7c2d
Revises: 798007289fd8
Create Date: 2026-11-26 19:30:00

SQLite cannot alter a CHECK constraint: batch mode rebuilds the two tables. Other
tables reference their rows (postings -> transfers, transfers -> reservations), and
dropping the old table would break those references while foreign keys are enforced, so
on SQLite the rebuild follows SQLite's documented procedure: foreign keys off (outside a
transaction), rebuild, ``PRAGMA foreign_key_check``, foreign keys on again.
"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '3b9e4f1a7c2d'
down_revision: Union[str, Sequence[str], None] = '798007289fd8'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_KINDS = "kind IN ('deposit', 'reservation', 'capture', 'release')"
NEW_KINDS = "kind IN ('deposit', 'reservation', 'capture', 'release', 'refund')"
OLD_STATUSES = "status IN ('awaiting_funds', 'held', 'captured', 'released', 'withdrawn')"
NEW_STATUSES = ("status IN ('awaiting_funds', 'held', 'captured', 'released', 'withdrawn', "
                "'refunded')")


def _replace_checks(kinds: str, statuses: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        _rebuild(kinds, statuses)
        return
    # PRAGMA foreign_keys is a no-op inside a transaction: step out of Alembic's, and
    # always leave the connection with foreign keys on and a transaction open again.
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    bind.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        _rebuild(kinds, statuses)
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


def _rebuild(kinds: str, statuses: str) -> None:
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_transfers_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_transfers_kind'), kinds)
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_reservations_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_reservations_status'), statuses)


def upgrade() -> None:
    """Upgrade schema."""
    _replace_checks(NEW_KINDS, NEW_STATUSES)


def downgrade() -> None:
    """Downgrade schema (refuses while refunds exist: their rows would break the checks)."""
    _replace_checks(OLD_KINDS, OLD_STATUSES)
