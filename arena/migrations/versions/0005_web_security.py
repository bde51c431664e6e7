"""web security: session generations, disabled accounts and one-time passwords on users; rate limits
counted atomically in rate_counters (one row per key and window) instead of one rate_hits row per attempt

Revision ID: 0005_web_security
Revises: 0004
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005_web_security'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('password_expires_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('session_generation', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('disabled_at', sa.DateTime(), nullable=True))
    op.create_table(
        'rate_counters',
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('window_start', sa.DateTime(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key', name='pk_rate_counters'),
    )
    op.create_index('ix_rate_counters_window_start', 'rate_counters', ['window_start'])
    op.drop_index('ix_rate_hits_at', table_name='rate_hits')
    op.drop_index('ix_rate_hits_key', table_name='rate_hits')
    op.drop_table('rate_hits')  # counts of the last 15 minutes: nothing worth carrying over


def downgrade() -> None:
    op.create_table(
        'rate_hits',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_rate_hits'),
    )
    op.create_index('ix_rate_hits_key', 'rate_hits', ['key'])
    op.create_index('ix_rate_hits_at', 'rate_hits', ['at'])
    op.drop_index('ix_rate_counters_window_start', table_name='rate_counters')
    op.drop_table('rate_counters')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('disabled_at')
        batch.drop_column('session_generation')
        batch.drop_column('password_expires_at')
