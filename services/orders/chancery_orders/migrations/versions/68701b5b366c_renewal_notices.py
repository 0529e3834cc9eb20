"""renewal notices: settings, sent notices, and the names the inventory searches

Revision ID: 68701b5b366c
Revises: 4c7c8d0decd8
Create Date: 2026-11-26 19:20:20.006970

"""
import json
from typing import Sequence, Union

import idna
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '68701b5b366c'
down_revision: Union[str, Sequence[str], None] = '4c7c8d0decd8'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('renewal_settings',
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('days_before', sa.JSON(), nullable=False),
    sa.Column('emails', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.String(length=36), nullable=True),
    sa.Column('updated_by_name', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_renewal_settings'))
    )
    order_names = op.create_table('order_names',
    sa.Column('order_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_names_order_id_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('order_id', 'name', name=op.f('pk_order_names'))
    )
    op.create_table('order_renewal_settings',
    sa.Column('order_id', sa.String(length=36), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('days_before', sa.JSON(), nullable=True),
    sa.Column('emails', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.String(length=36), nullable=True),
    sa.Column('updated_by_name', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_renewal_settings_order_id_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_order_renewal_settings'))
    )
    op.create_table('renewal_notices_sent',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('serial', sa.String(length=80), nullable=False),
    sa.Column('days_before', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.String(length=36), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=120), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recipients', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_renewal_notices_sent_order_id_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_renewal_notices_sent')),
    sa.UniqueConstraint('serial', 'days_before', name='uq_renewal_notices_sent_serial_days_before')
    )
    with op.batch_alter_table('renewal_notices_sent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_renewal_notices_sent_order_id'), ['order_id'], unique=False)

    _index_existing_names(order_names)


def _index_existing_names(order_names: sa.Table) -> None:
    """The names of the orders placed before this revision (later ones are written by the
    ORM hook in inventory.py): each name, and the Unicode form of an IDN."""
    connection = op.get_bind()
    orders = sa.table('orders', sa.column('id', sa.String), sa.column('common_name', sa.String),
                      sa.column('sans', sa.JSON))
    rows = []
    for order_id, common_name, sans in connection.execute(
            sa.select(orders.c.id, orders.c.common_name, orders.c.sans)):
        if isinstance(sans, str):
            sans = json.loads(sans)
        names = {name.lower() for name in [common_name, *(sans or [])] if name}
        for name in list(names):
            if "xn--" in name:
                try:
                    names.add(idna.decode(name.removeprefix("*.")).lower())
                except (idna.IDNAError, UnicodeError):
                    pass
        rows.extend({"order_id": order_id, "name": name} for name in sorted(names))
    if rows:
        op.bulk_insert(order_names, rows)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('renewal_notices_sent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_renewal_notices_sent_order_id'))

    op.drop_table('renewal_notices_sent')
    op.drop_table('order_renewal_settings')
    op.drop_table('order_names')
    op.drop_table('renewal_settings')
