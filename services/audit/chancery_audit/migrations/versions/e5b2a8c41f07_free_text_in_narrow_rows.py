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
    unit separator (0x1f), with its account, units and time, and its first 500
    characters; filled from the entries. Its GIN index (account, units, trigrams of the
    text) replaces the three trigram indexes on the (wide) entry rows; two time indexes
    hold the first 500 characters."""
    op.create_table(
        'audit_entry_texts',
        sa.Column('entry_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(), nullable=True),
        sa.Column('unit_ids', sa.ARRAY(sa.String()).with_variant(sa.JSON(), 'sqlite'),
                  nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('head', sa.Text(), nullable=False),
        sa.Column('complete', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['entry_id'], ['audit_entries.id'],
                                name=op.f('fk_audit_entry_texts_entry_id_audit_entries'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_audit_entry_texts')),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    separator = "chr(31)" if postgresql else "char(31)"
    units = ("coalesce((SELECT array_agg(u.unit_id ORDER BY u.unit_id) "
             "FROM audit_entry_units u WHERE u.entry_id = e.id), '{}')" if postgresql else
             "(SELECT json_group_array(unit_id) FROM (SELECT u.unit_id "
             "FROM audit_entry_units u WHERE u.entry_id = e.id ORDER BY u.unit_id))")
    op.execute(
        "INSERT INTO audit_entry_texts (entry_id, account_id, unit_ids, at, text, head, "
        "complete) SELECT id, account_id, unit_ids, at, text, substr(text, 1, 500), "
        "length(text) <= 500 FROM (SELECT e.id, e.account_id, "
        f"{units} AS unit_ids, e.at, coalesce(e.description, '') || {separator} || "
        f"coalesce(e.user_name, '') || {separator} || coalesce(e.target, '') AS text "
        "FROM audit_entries e) AS entry")
    if postgresql:
        # btree_gin: the account in the same GIN index as the units and the trigrams (a
        # trusted extension, like pg_trgm: the database's owner may create it)
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        op.create_index('ix_audit_entry_texts_account_units_text', 'audit_entry_texts',
                        ['account_id', 'unit_ids', 'text'], unique=False,
                        postgresql_using='gin', postgresql_ops={'text': 'gin_trgm_ops'})
    # the newest entries' texts in time order, read from the index alone (the first 500
    # characters: a btree row must stay under 2,704 bytes)
    op.create_index('ix_audit_entry_texts_account_at', 'audit_entry_texts',
                    ['account_id', 'at', 'entry_id'], unique=False,
                    postgresql_include=['head', 'complete'])
    op.create_index('ix_audit_entry_texts_at', 'audit_entry_texts', ['at', 'entry_id'],
                    unique=False, postgresql_include=['head', 'complete'])
    if postgresql:
        for column in TRIGRAM_COLUMNS:
            op.drop_index(f'ix_audit_entries_{column}_trgm', table_name='audit_entries')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in TRIGRAM_COLUMNS:
            op.create_index(f'ix_audit_entries_{column}_trgm', 'audit_entries', [column],
                            unique=False, postgresql_using='gin',
                            postgresql_ops={column: 'gin_trgm_ops'})
        op.drop_index('ix_audit_entry_texts_account_units_text', table_name='audit_entry_texts')
    op.drop_index('ix_audit_entry_texts_at', table_name='audit_entry_texts')
    op.drop_index('ix_audit_entry_texts_account_at', table_name='audit_entry_texts')
    op.drop_table('audit_entry_texts')
