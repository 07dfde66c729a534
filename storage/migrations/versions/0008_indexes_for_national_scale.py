"""Indexes for national scale: the reminder ledger by cooperative

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The export's Riwayat sheet reads the ledger of a batch of cooperatives for its months: by
    # period alone that read every decided row of the month for each batch of 500.
    op.create_index(
        'ix_reminder_ledger_koperasi',
        'reminder_ledger',
        ['koperasi_id', 'period', 'kind'],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index('ix_reminder_ledger_koperasi', table_name='reminder_ledger')
