"""submissions.provenance: what a reference entry was trained on and how (shown on boards and in exports)

Revision ID: 0009_submission_provenance
Revises: 0008_evaluation_fault
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0009_submission_provenance'
down_revision: Union[str, Sequence[str], None] = '0008_evaluation_fault'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('submissions') as b:
        b.add_column(sa.Column('provenance', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('submissions') as b:
        b.drop_column('provenance')
