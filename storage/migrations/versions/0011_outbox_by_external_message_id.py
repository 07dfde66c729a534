"""outbox rows by the message id a channel gave

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 15:35:07.345610
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # WhatsApp's status callbacks (delivered, read, failed) find their row by the message id.
    op.create_index('ix_outbox_external_message_id', 'outbox', ['external_message_id'])


def downgrade() -> None:
    op.drop_index('ix_outbox_external_message_id', table_name='outbox')
