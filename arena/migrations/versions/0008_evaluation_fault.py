"""evaluations.fault: whose fault a failed evaluation is (participant | platform), set by the runner where
it knows it, so that quota refunds no longer match error messages

Revision ID: 0008_evaluation_fault
Revises: 0007_model_archives
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0008_evaluation_fault'
down_revision: Union[str, Sequence[str], None] = '0007_model_archives'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# the messages that marked platform failures before this column (kept here only to carry old rows over)
_OLD_PLATFORM_MESSAGES = ("%gave up after%", "%the smoke case could not be run%", "%this worker has none%")


def upgrade() -> None:
    with op.batch_alter_table('evaluations') as b:
        b.add_column(sa.Column('fault', sa.String(length=20), nullable=True))
    evaluations = sa.table('evaluations', sa.column('status', sa.String), sa.column('error', sa.Text),
                           sa.column('fault', sa.String))
    op.execute(evaluations.update().where(evaluations.c.status == 'failed').values(fault='participant'))
    op.execute(evaluations.update().where(evaluations.c.status == 'failed').where(
        sa.or_(*[evaluations.c.error.like(p) for p in _OLD_PLATFORM_MESSAGES])).values(fault='platform'))


def downgrade() -> None:
    with op.batch_alter_table('evaluations') as b:
        b.drop_column('fault')
