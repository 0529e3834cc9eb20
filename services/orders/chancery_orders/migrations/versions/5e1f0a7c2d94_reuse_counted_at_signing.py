"""reuse counted at signing: every validation's validated_until becomes the BR 4.2.1
reuse limit as of the day a certificate is signed (chancery_shared.br_schedule), not
the period in force on the day it was validated

Revision ID: 5e1f0a7c2d94
Revises: 316b6a8e03f1
Create Date: 2026-12-06 08:10:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from chancery_shared.br_schedule import DOMAIN, ORGANIZATION, reusable_until
from chancery_shared.db import UtcDateTime

revision: str = '5e1f0a7c2d94'
down_revision: Union[str, Sequence[str], None] = '316b6a8e03f1'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _recompute(name: str, kind: str) -> None:
    bind = op.get_bind()
    table = sa.table(name, sa.column("id", sa.String()),
                     sa.column("validated_at", UtcDateTime()),
                     sa.column("validated_until", UtcDateTime()))
    rows = bind.execute(sa.select(table.c.id, table.c.validated_at)
                        .where(table.c.validated_at.is_not(None))).all()
    for row_id, validated_at in rows:
        bind.execute(table.update().where(table.c.id == row_id)
                     .values(validated_until=reusable_until(validated_at, kind)))


def upgrade() -> None:
    _recompute("domains", DOMAIN)
    _recompute("organizations", ORGANIZATION)


def downgrade() -> None:
    """The older dates were wrong (too late); nothing to restore."""
