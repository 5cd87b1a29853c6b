"""Prediction runs: stored syndrome rankings per case and model version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:02:14.702173
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prediction_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('ranked_by', sa.String(length=16), nullable=False),
    sa.Column('ranked', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_prediction_runs_case_id_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction_runs'))
    )
    with op.batch_alter_table('prediction_runs', schema=None) as batch_op:
        batch_op.create_index('ix_prediction_runs_case_created', ['case_id', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('prediction_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_prediction_runs_case_created')

    op.drop_table('prediction_runs')
