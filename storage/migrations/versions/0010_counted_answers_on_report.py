"""The counted answers of a report's current revision as columns of `report`

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

/rekap of a whole country read six JSON paths out of every current revision of two months
(1-2 s of the query on either database); the six answers it counts are now copied into the
report row when a revision is written (`Report.count_answers`), and counted with GROUP BY.
Existing reports are filled here from their current revision, with the same JSON path
functions the recap used (a text answer as is, anything else as its JSON text).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED = (
    'status_operasional',
    'kendala',
    'kendala_utama',
    'kebutuhan_bantuan',
    'kendala_teratasi',
    'kendala_memburuk',
)


def upgrade() -> None:
    with op.batch_alter_table('report', schema=None) as batch_op:
        for name in COUNTED:
            batch_op.add_column(sa.Column(name, sa.Text(), nullable=True))
    names = ', '.join(COUNTED)
    if op.get_bind().dialect.name == 'postgresql':
        # The answers are `json` (text): json_to_record parses each document once.
        typed = ', '.join(f'{name} text' for name in COUNTED)
        values = ', '.join(f'document.{name}' for name in COUNTED)
        op.execute(
            f'UPDATE report SET ({names}) = ({values}) '
            'FROM report_revision AS revision '
            f'CROSS JOIN LATERAL json_to_record(revision.answers) AS document({typed}) '
            'WHERE revision.report_id = report.id '
            'AND revision.revision = report.current_revision'
        )
    else:
        paths = ', '.join(f"json_extract(revision.answers, '$.\"{name}\"')" for name in COUNTED)
        op.execute(
            f'UPDATE report SET ({names}) = (SELECT {paths} FROM report_revision AS revision '
            'WHERE revision.report_id = report.id '
            'AND revision.revision = report.current_revision)'
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        # Natively (SQLite 3.35+): a batch would copy `report` and drop the old table, and with
        # foreign keys on, the drop deletes every revision (ON DELETE CASCADE).
        for name in reversed(COUNTED):
            op.execute(f'ALTER TABLE report DROP COLUMN {name}')
        return
    for name in reversed(COUNTED):
        op.drop_column('report', name)
