"""quota reservations: a slot is held from before an upload's body is streamed until it becomes a
submission or is refused; teams.quota_serial is the row every quota decision of a team updates first,
so that check-and-reserve is one step on SQLite and PostgreSQL

Revision ID: 0006_quota_reservations
Revises: 0005_web_security
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006_quota_reservations'
down_revision: Union[str, Sequence[str], None] = '0005_web_security'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'quota_reservations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('phase_id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['phase_id'], ['phases.id'], name='fk_quota_reservations_phase', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name='fk_quota_reservations_team', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name='fk_quota_reservations_user', ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name='pk_quota_reservations'),
    )
    op.create_index('ix_quota_reservations_expires_at', 'quota_reservations', ['expires_at'])
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_serial', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.drop_column('quota_serial')
    op.drop_index('ix_quota_reservations_expires_at', table_name='quota_reservations')
    op.drop_table('quota_reservations')
