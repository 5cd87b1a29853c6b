"""Explanation objectives (logit or embedding similarity) and research-cohort tables (issue 9).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 19:58:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('objective', sa.String(length=200), server_default='logit', nullable=False))
        batch_op.add_column(sa.Column('subject', sa.String(length=120), server_default='', nullable=False))
        batch_op.drop_constraint('uq_explanations_key', type_='unique')
        batch_op.create_unique_constraint('uq_explanations_key', ['case_id', 'model_id', 'model_version', 'method',
                                                                  'target_id', 'params_key', 'objective', 'subject'])
    op.create_table('cohort_results',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('syndrome_id', sa.String(length=64), nullable=False),
    sa.Column('objective', sa.String(length=200), nullable=False),
    sa.Column('methods', sa.JSON(), nullable=False),
    sa.Column('case_ids', sa.JSON(), nullable=False),
    sa.Column('n_patients', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_cohort_results_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_cohort_results_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cohort_results'))
    )
    with op.batch_alter_table('cohort_results', schema=None) as batch_op:
        batch_op.create_index('ix_cohort_results_lookup', ['owner_id', 'model_version', 'syndrome_id', 'objective',
                                                           'digest'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cohort_results', schema=None) as batch_op:
        batch_op.drop_index('ix_cohort_results_lookup')
    op.drop_table('cohort_results')
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_constraint('uq_explanations_key', type_='unique')
        batch_op.create_unique_constraint('uq_explanations_key', ['case_id', 'model_id', 'model_version', 'method',
                                                                  'target_id', 'params_key'])
        batch_op.drop_column('subject')
        batch_op.drop_column('objective')
