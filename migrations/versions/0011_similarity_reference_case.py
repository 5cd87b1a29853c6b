"""A similarity map tied to the case it compares with by a foreign key (issue 19).

``explanations.reference_case_id`` names the case of a ``similarity:case:<id>`` objective; ON DELETE CASCADE,
so erasing that case removes the maps other cases held for it (their files are unlinked by the erasure's
hooks after the commit). Existing rows are filled from their objective; a row whose case no longer exists
(none should: erasure removed them by string match until now) is deleted rather than left dangling.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 22:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PREFIX = 'similarity:case:'


def upgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference_case_id', sa.String(length=32), nullable=True))
    explanations = sa.table('explanations', sa.column('id', sa.String), sa.column('objective', sa.String),
                            sa.column('reference_case_id', sa.String))
    cases = sa.table('cases', sa.column('id', sa.String))
    bind = op.get_bind()
    known = {row[0] for row in bind.execute(sa.select(cases.c.id))}
    rows = bind.execute(sa.select(explanations.c.id, explanations.c.objective)
                        .where(explanations.c.objective.like(f'{PREFIX}%'))).all()
    for row_id, objective in rows:
        case_id = objective[len(PREFIX):][:32]
        if case_id in known:
            bind.execute(explanations.update().where(explanations.c.id == row_id)
                         .values(reference_case_id=case_id))
        else:
            bind.execute(explanations.delete().where(explanations.c.id == row_id))
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_explanations_reference_case_id'), ['reference_case_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_explanations_reference_case_id_cases'), 'cases',
                                    ['reference_case_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_explanations_reference_case_id_cases'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_explanations_reference_case_id'))
        batch_op.drop_column('reference_case_id')
