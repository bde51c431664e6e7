"""site workers: sites that hold a phase's hidden cases themselves, their scoped worker tokens (only the
sha256 stored), and phases.site_id (NULL: local workers serve the phase; set: only that site's workers)

Revision ID: 0010_site_workers
Revises: 0009_submission_provenance
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0010_site_workers'
down_revision: Union[str, Sequence[str], None] = '0009_submission_provenance'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'sites',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', name='uq_sites_name'),
    )
    op.create_table(
        'worker_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('phase_ids', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name='fk_worker_tokens_site', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_sha256', name='uq_worker_tokens_sha256'),
    )
    with op.batch_alter_table('phases') as b:
        b.add_column(sa.Column('site_id', sa.Integer(), nullable=True))
        b.create_foreign_key('fk_phases_site', 'sites', ['site_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('phases') as b:
        b.drop_constraint('fk_phases_site', type_='foreignkey')
        b.drop_column('site_id')
    op.drop_table('worker_tokens')
    op.drop_table('sites')
