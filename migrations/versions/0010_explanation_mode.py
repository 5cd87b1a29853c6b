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


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
