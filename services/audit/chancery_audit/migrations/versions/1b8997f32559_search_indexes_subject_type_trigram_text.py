"""search indexes: subject type, trigram text, unit time order

Revision ID: 1b8997f32559
Revises: 687c2719fa6f
Create Date: 2026-11-26 22:07:01.297915

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '1b8997f32559'
down_revision: Union[str, Sequence[str], None] = '687c2719fa6f'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


TRIGRAM_COLUMNS = ("description", "user_name", "target")


def upgrade() -> None:
    """Indexes for target-by-type pages, (PostgreSQL) trigram indexes for free text, and
    the entry's time beside each unit it concerns (a unit administrator's pages)."""
    with op.batch_alter_table('audit_entry_units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('account_id', sa.String(), nullable=True))
    op.execute("UPDATE audit_entry_units SET "
               "at = (SELECT e.at FROM audit_entries e WHERE e.id = audit_entry_units.entry_id), "
               "account_id = (SELECT e.account_id FROM audit_entries e "
               "WHERE e.id = audit_entry_units.entry_id)")
    with op.batch_alter_table('audit_entry_units', schema=None) as batch_op:
        batch_op.alter_column('at', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index('ix_audit_entry_units_unit_at', ['unit_id', 'at', 'entry_id'],
                              unique=False)
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_account_subject_type_at', ['account_id', 'subject_type', 'at', 'id'], unique=False)
        batch_op.create_index('ix_audit_entries_subject_type_at', ['subject_type', 'at', 'id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # pg_trgm is a trusted extension: the database's owner may create it
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for column in TRIGRAM_COLUMNS:
            op.create_index(f'ix_audit_entries_{column}_trgm', 'audit_entries', [column],
                            unique=False, postgresql_using='gin',
                            postgresql_ops={column: 'gin_trgm_ops'})


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        for column in TRIGRAM_COLUMNS:
            op.drop_index(f'ix_audit_entries_{column}_trgm', table_name='audit_entries')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_subject_type_at')
        batch_op.drop_index('ix_audit_entries_account_subject_type_at')
    with op.batch_alter_table('audit_entry_units', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_units_unit_at')
        batch_op.drop_column('account_id')
        batch_op.drop_column('at')
