"""Explanation compute mode: 'exact' (maps equal to naive Captum's) or 'fast' (measured approximation).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:05:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


KEY = ['case_id', 'model_id', 'model_version', 'method', 'target_id', 'params_key', 'objective', 'subject']


def upgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mode', sa.String(length=8), server_default='exact', nullable=False))
        batch_op.drop_constraint('uq_explanations_key', type_='unique')
        batch_op.create_unique_constraint('uq_explanations_key', [*KEY, 'mode'])


def downgrade() -> None:
    op.execute("DELETE FROM explanations WHERE mode <> 'exact'")  # the old key cannot hold both modes
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_constraint('uq_explanations_key', type_='unique')
        batch_op.create_unique_constraint('uq_explanations_key', KEY)
        batch_op.drop_column('mode')
