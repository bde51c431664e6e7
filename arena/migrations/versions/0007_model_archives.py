"""model archives: a team's model tarball, extracted read-only at /opt/ml/model for the submissions
that name it (grand-challenge's separate model upload)

Revision ID: 0007_model_archives
Revises: 0006_quota_reservations
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0007_model_archives'
down_revision: Union[str, Sequence[str], None] = '0006_quota_reservations'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'model_archives',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('path', sa.String(length=500), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('unpacked_bytes', sa.BigInteger(), nullable=False),
        sa.Column('files', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name='fk_model_archives_team', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('team_id', 'sha256', name='uq_model_archives_team_sha256'),
    )
    with op.batch_alter_table('submissions') as b:
        b.add_column(sa.Column('model_archive_id', sa.Integer(), nullable=True))
        b.create_foreign_key('fk_submissions_model_archive', 'model_archives', ['model_archive_id'], ['id'],
                             ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('submissions') as b:
        b.drop_constraint('fk_submissions_model_archive', type_='foreignkey')
        b.drop_column('model_archive_id')
    op.drop_table('model_archives')
