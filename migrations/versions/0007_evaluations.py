"""Explanation evaluations: one stored scorecard per (model id, model version, benchmark spec).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 19:55:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
