"""unit rows carry the entry's action

Revision ID: c4e1d7a9b203
Revises: aa9c6b736872
Create Date: 2026-11-27 00:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'c4e1d7a9b203'
down_revision: Union[str, Sequence[str], None] = 'aa9c6b736872'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """A unit administrator's action filter reads (unit, action, time) from the unit rows."""
    with op.batch_alter_table('audit_entry_units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('action', sa.String(), nullable=True))
    op.execute("UPDATE audit_entry_units SET action = (SELECT e.action FROM audit_entries e "
               "WHERE e.id = audit_entry_units.entry_id)")
    with op.batch_alter_table('audit_entry_units', schema=None) as batch_op:
        batch_op.alter_column('action', existing_type=sa.String(), nullable=False)
        batch_op.create_index('ix_audit_entry_units_unit_action_at',
                              ['unit_id', 'action', 'at', 'entry_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_entry_units', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_units_unit_action_at')
        batch_op.drop_column('action')
