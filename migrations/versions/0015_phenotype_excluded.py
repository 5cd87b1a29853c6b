"""Excluded HPO terms: a case's term may be marked as absent in the patient (issue 23), which counts against
a syndrome whose profile has it.

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-06 23:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('case_phenotypes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('excluded', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('case_phenotypes', schema=None) as batch_op:
        batch_op.drop_column('excluded')
