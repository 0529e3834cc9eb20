"""what entries concern, and when those certificates, orders and CAs end (retention)

Revision ID: a4843cd24a25
Revises: e5b2a8c41f07
Create Date: 2026-12-06 07:22:01.301897

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'a4843cd24a25'
down_revision: Union[str, Sequence[str], None] = 'e5b2a8c41f07'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 1000


def upgrade() -> None:
    """audit_entry_concerns (the orders, certificates, CAs and domains an entry is
    about), audit_certificates and their names, audit_orders (ended without a certificate) and audit_issuers;
    filled from the entries already recorded, oldest first in each log."""
    op.create_table('audit_certificates',
    sa.Column('serial', sa.String(), nullable=False),
    sa.Column('order_id', sa.String(), nullable=True),
    sa.Column('account_id', sa.String(), nullable=True),
    sa.Column('issuer_id', sa.String(), nullable=True),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('serial', name=op.f('pk_audit_certificates'))
    )
    with op.batch_alter_table('audit_certificates', schema=None) as batch_op:
        batch_op.create_index('ix_audit_certificates_order', ['order_id'], unique=False)

    op.create_table('audit_certificate_names',
    sa.Column('serial', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.ForeignKeyConstraint(['serial'], ['audit_certificates.serial'], name=op.f('fk_audit_certificate_names_serial_audit_certificates'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('serial', 'name', name=op.f('pk_audit_certificate_names'))
    )
    with op.batch_alter_table('audit_certificate_names', schema=None) as batch_op:
        batch_op.create_index('ix_audit_certificate_names_name', ['name'], unique=False)

    op.create_table('audit_issuers',
    sa.Column('issuer_id', sa.String(), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('issuer_id', name=op.f('pk_audit_issuers'))
    )
    op.create_table('audit_orders',
    sa.Column('order_id', sa.String(), nullable=False),
    sa.Column('account_id', sa.String(), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_as', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_audit_orders'))
    )
    op.create_table('audit_entry_concerns',
    sa.Column('entry_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['audit_entries.id'], name=op.f('fk_audit_entry_concerns_entry_id_audit_entries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('entry_id', 'kind', 'ref', name=op.f('pk_audit_entry_concerns'))
    )
    _learn_from_existing_entries()


def _learn_from_existing_entries() -> None:
    """What the entries recorded before these tables say, learnt as recording would have
    (the same code: ``lifecycles.learn``), in time order so a revocation follows its
    issuance; read in batches so a long log is filled in bounded memory."""
    from chancery_audit.lifecycles import learn_from_entries
    from sqlalchemy.orm import Session

    entries = sa.table("audit_entries", sa.column("id"), sa.column("account_id"),
                       sa.column("at", sa.DateTime(timezone=True)), sa.column("envelope"))
    session = Session(bind=op.get_bind())
    after = None
    while True:
        query = (sa.select(entries).order_by(entries.c.at, entries.c.id).limit(BATCH))
        if after is not None:
            query = query.where(sa.or_(entries.c.at > after[0],
                                       sa.and_(entries.c.at == after[0],
                                               entries.c.id > after[1])))
        rows = session.execute(query).all()
        if not rows:
            break
        learn_from_entries(session, rows)
        after = (rows[-1].at, rows[-1].id)
        session.expunge_all()
    session.flush()


def downgrade() -> None:
    op.drop_table('audit_entry_concerns')
    op.drop_table('audit_orders')
    op.drop_table('audit_issuers')
    with op.batch_alter_table('audit_certificate_names', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_certificate_names_name')
    op.drop_table('audit_certificate_names')
    with op.batch_alter_table('audit_certificates', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_certificates_order')
    op.drop_table('audit_certificates')
