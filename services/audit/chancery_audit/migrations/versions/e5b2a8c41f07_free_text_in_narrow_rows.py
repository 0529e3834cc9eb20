"""free text in narrow rows of its own, with one trigram index

Revision ID: e5b2a8c41f07
Revises: c4e1d7a9b203
Create Date: 2026-11-27 03:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'e5b2a8c41f07'
down_revision: Union[str, Sequence[str], None] = 'c4e1d7a9b203'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


TRIGRAM_COLUMNS = ("description", "user_name", "target")


def upgrade() -> None:
    """audit_entry_texts: each entry's description, user name and target joined by a
    unit separator (0x1f), with its account and time; filled from the entries. Its one
    trigram index replaces the three on the (wide) entry rows."""
    op.create_table(
        'audit_entry_texts',
        sa.Column('entry_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['entry_id'], ['audit_entries.id'],
                                name=op.f('fk_audit_entry_texts_entry_id_audit_entries'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_audit_entry_texts')),
    )
    separator = "chr(31)" if op.get_bind().dialect.name == "postgresql" else "char(31)"
    op.execute(
        "INSERT INTO audit_entry_texts (entry_id, account_id, at, text) "
        f"SELECT id, account_id, at, coalesce(description, '') || {separator} || "
        f"coalesce(user_name, '') || {separator} || coalesce(target, '') FROM audit_entries")
    if op.get_bind().dialect.name == "postgresql":
        op.create_index('ix_audit_entry_texts_text_trgm', 'audit_entry_texts', ['text'],
                        unique=False, postgresql_using='gin',
                        postgresql_ops={'text': 'gin_trgm_ops'})
        for column in TRIGRAM_COLUMNS:
            op.drop_index(f'ix_audit_entries_{column}_trgm', table_name='audit_entries')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in TRIGRAM_COLUMNS:
            op.create_index(f'ix_audit_entries_{column}_trgm', 'audit_entries', [column],
                            unique=False, postgresql_using='gin',
                            postgresql_ops={column: 'gin_trgm_ops'})
        op.drop_index('ix_audit_entry_texts_text_trgm', table_name='audit_entry_texts')
    op.drop_table('audit_entry_texts')
