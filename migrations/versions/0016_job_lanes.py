"""Job lanes (issue 21): each job records its lane (interactive or batch) and the cost estimate it was queued
with, so the queue can be shown honestly and estimates checked against real durations.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-07 03:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lane', sa.String(length=16), server_default='batch', nullable=False))
        batch_op.add_column(sa.Column('estimated_s', sa.Float(), nullable=True))
        batch_op.create_index('ix_jobs_lane_state_created', ['lane', 'state', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_lane_state_created')
        batch_op.drop_column('estimated_s')
        batch_op.drop_column('lane')
