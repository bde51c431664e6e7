"""web platform: passwords, API tokens table, team invites, task organizers, phase schedule and
visibility, audit events, rate-limit counters

Existing users.token_sha256 values move into api_tokens (name "cli"), then the column is dropped.

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name='fk_api_tokens_user', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_api_tokens'),
        sa.UniqueConstraint('token_sha256', name='uq_api_tokens_token_sha256'),
    )
    op.create_index('ix_api_tokens_user_id', 'api_tokens', ['user_id'])
    op.create_table(
        'audit_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('actor_user_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=60), nullable=False),
        sa.Column('target_type', sa.String(length=40), nullable=True),
        sa.Column('target_id', sa.String(length=100), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['actor_user_id'], ['users.id'], name='fk_audit_events_actor', ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name='pk_audit_events'),
    )
    op.create_index('ix_audit_events_at', 'audit_events', ['at'])
    op.create_index('ix_audit_events_action', 'audit_events', ['action'])
    op.create_table(
        'rate_hits',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_rate_hits'),
    )
    op.create_index('ix_rate_hits_key', 'rate_hits', ['key'])
    op.create_index('ix_rate_hits_at', 'rate_hits', ['at'])
    op.create_table(
        'task_organizers',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name='fk_task_organizers_task', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name='fk_task_organizers_user', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('task_id', 'user_id', name='pk_task_organizers'),
    )
    with op.batch_alter_table('phases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opens_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('closes_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('submission_limit', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('visibility', sa.String(length=20), nullable=False, server_default='public'))
        batch_op.add_column(sa.Column('frozen_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('reveal_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('frozen_board', sa.JSON(), nullable=True))
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invite_code', sa.String(length=40), nullable=True))
        batch_op.create_unique_constraint('uq_teams_invite_code', ['invite_code'])

    # users.token_sha256 -> api_tokens, then the column (and its unique constraint) goes
    conn = op.get_bind()
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('token_sha256', sa.String),
                     sa.column('created_at', sa.DateTime))
    tokens = sa.table('api_tokens', sa.column('user_id', sa.Integer), sa.column('name', sa.String),
                      sa.column('token_sha256', sa.String), sa.column('created_at', sa.DateTime))
    rows = conn.execute(sa.select(users.c.id, users.c.token_sha256, users.c.created_at)
                        .where(users.c.token_sha256.is_not(None))).all()
    if rows:
        conn.execute(tokens.insert(), [{"user_id": r.id, "name": "cli", "token_sha256": r.token_sha256,
                                        "created_at": r.created_at} for r in rows])
    with op.batch_alter_table('users', schema=None) as batch_op:
        if conn.dialect.name != 'sqlite':
            for uc in sa.inspect(conn).get_unique_constraints('users'):
                if uc['column_names'] == ['token_sha256'] and uc.get('name'):
                    batch_op.drop_constraint(uc['name'], type_='unique')
        batch_op.drop_column('token_sha256')
        batch_op.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))


def downgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('password_hash')
        batch_op.add_column(sa.Column('token_sha256', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_users_token_sha256', ['token_sha256'])
    # one token per user fits the old column: the newest unrevoked one
    rows = conn.execute(sa.text("SELECT user_id, token_sha256 FROM api_tokens WHERE revoked_at IS NULL "
                                "ORDER BY id")).all()
    latest = {r.user_id: r.token_sha256 for r in rows}
    for user_id, digest in latest.items():
        conn.execute(sa.text("UPDATE users SET token_sha256 = :d WHERE id = :u"), {"d": digest, "u": user_id})
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.drop_constraint('uq_teams_invite_code', type_='unique')
        batch_op.drop_column('invite_code')
    with op.batch_alter_table('phases', schema=None) as batch_op:
        for col in ('frozen_board', 'reveal_at', 'frozen_at', 'visibility', 'submission_limit', 'closes_at',
                    'opens_at'):
            batch_op.drop_column(col)
    op.drop_table('task_organizers')
    op.drop_index('ix_rate_hits_at', table_name='rate_hits')
    op.drop_index('ix_rate_hits_key', table_name='rate_hits')
    op.drop_table('rate_hits')
    op.drop_index('ix_audit_events_action', table_name='audit_events')
    op.drop_index('ix_audit_events_at', table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_index('ix_api_tokens_user_id', table_name='api_tokens')
    op.drop_table('api_tokens')
