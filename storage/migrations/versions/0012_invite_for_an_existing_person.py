"""Invites that add a chat on another channel to an existing person

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 16:23:12.559038
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN on SQLite too (no table rebuild): no foreign key.
    op.add_column('invite', sa.Column('for_person_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    # Native DROP COLUMN (SQLite 3.35+, PostgreSQL): a batch rebuild of `invite` would trip the
    # board members' foreign key to it.
    op.execute('ALTER TABLE invite DROP COLUMN for_person_id')
