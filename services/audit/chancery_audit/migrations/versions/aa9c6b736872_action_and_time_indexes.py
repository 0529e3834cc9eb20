"""action and time indexes

Revision ID: aa9c6b736872
Revises: 1b8997f32559
Create Date: 2026-11-26 22:36:56.279968

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'aa9c6b736872'
down_revision: Union[str, Sequence[str], None] = '1b8997f32559'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Action filters read each type's entries newest first from these."""
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_account_action_at', ['account_id', 'action', 'at', 'id'], unique=False)
        batch_op.create_index('ix_audit_entries_action_at', ['action', 'at', 'id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_action_at')
        batch_op.drop_index('ix_audit_entries_account_action_at')

