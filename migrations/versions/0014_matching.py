"""Matching: case embeddings per model version and cases shared for matching (issue 22).

Revision ID: 0014
Revises: 0015
Create Date: 2026-12-06 23:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'case_embeddings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.String(length=32), nullable=False),
        sa.Column('model_id', sa.String(length=64), nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('views', sa.Integer(), nullable=False),
        sa.Column('vector', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('case_id', 'model_id', 'model_version', name='uq_case_embeddings_case_model'),
    )
    op.create_index('ix_case_embeddings_model', 'case_embeddings', ['model_id', 'model_version'])
    op.create_table(
        'match_shares',
        sa.Column('case_id', sa.String(length=32), nullable=False),
        sa.Column('shared_by', sa.Integer(), nullable=True),
        sa.Column('shared_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['shared_by'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('case_id'),
    )


def downgrade() -> None:
    op.drop_table('match_shares')
    op.drop_index('ix_case_embeddings_model', table_name='case_embeddings')
    op.drop_table('case_embeddings')
