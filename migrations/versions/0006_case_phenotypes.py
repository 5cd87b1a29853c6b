"""Case phenotypes (HPO terms per case) and the out-of-range verdict of each prediction run (issue 11).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:55:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('case_phenotypes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('hpo_id', sa.String(length=10), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('added_by', sa.Integer(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_phenotypes_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['added_by'], ['users.id'], name=op.f('fk_case_phenotypes_added_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_phenotypes')),
    sa.UniqueConstraint('case_id', 'hpo_id', name='uq_case_phenotypes_case_hpo')
    )
    with op.batch_alter_table('case_phenotypes', schema=None) as batch_op:
        batch_op.create_index('ix_case_phenotypes_hpo_case', ['hpo_id', 'case_id'], unique=False)
    with op.batch_alter_table('prediction_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('out_of_distribution', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('prediction_runs', schema=None) as batch_op:
        batch_op.drop_column('out_of_distribution')
    with op.batch_alter_table('case_phenotypes', schema=None) as batch_op:
        batch_op.drop_index('ix_case_phenotypes_hpo_case')
    op.drop_table('case_phenotypes')
