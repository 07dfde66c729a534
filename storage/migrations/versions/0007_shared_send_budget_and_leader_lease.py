"""shared send budget and leader lease

`send_budget`: one row per channel, the moment its next message may start; every sender on
PostgreSQL claims its slots from it, so N processes together keep one rate (bot/sender.py).
`leader_lease`: which process runs the scheduler; on PostgreSQL an advisory lock decides and the
row shows the holder, on SQLite the row is the lease (bot/leader.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'send_budget',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('next_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_send_budget')),
    )
    op.create_table(
        'leader_lease',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('holder', sa.String(length=100), nullable=False),
        sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_leader_lease')),
    )


def downgrade() -> None:
    op.drop_table('leader_lease')
    op.drop_table('send_budget')
