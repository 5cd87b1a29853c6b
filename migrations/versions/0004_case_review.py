"""Case review: the append-only diagnoses table and indexed denormalised columns for the case list.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:27:05.549613
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('diagnoses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('syndrome_id', sa.String(length=64), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('omim', sa.String(length=6), nullable=True),
    sa.Column('model', sa.String(length=140), nullable=True),
    sa.Column('confirmed_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_diagnoses_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['confirmed_by'], ['users.id'], name=op.f('fk_diagnoses_confirmed_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_diagnoses'))
    )
    with op.batch_alter_table('diagnoses', schema=None) as batch_op:
        batch_op.create_index('ix_diagnoses_case_created', ['case_id', 'created_at'], unique=False)

    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('predicted_syndrome_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('predicted_syndrome_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('diagnosis_syndrome_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('diagnosis_omim', sa.String(length=6), nullable=True))
        batch_op.add_column(sa.Column('diagnosis_name', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_cases_diagnosis_omim', ['diagnosis_omim'], unique=False)
        batch_op.create_index('ix_cases_diagnosis_syndrome', ['diagnosis_syndrome_id'], unique=False)
        batch_op.create_index('ix_cases_predicted_created', ['predicted_syndrome_id', 'created_at'], unique=False)
        batch_op.create_index('ix_cases_predicted_name', ['predicted_syndrome_name'], unique=False)

    _backfill_predicted_syndrome()



def _backfill_predicted_syndrome() -> None:
    """Copy the top-1 syndrome of each case's newest prediction run onto the case."""
    conn = op.get_bind()
    runs = sa.table('prediction_runs', sa.column('id', sa.Integer()), sa.column('case_id', sa.String()),
                    sa.column('created_at', sa.DateTime(timezone=True)), sa.column('ranked', sa.JSON()))
    cases = sa.table('cases', sa.column('id', sa.String()), sa.column('predicted_syndrome_id', sa.String()),
                     sa.column('predicted_syndrome_name', sa.String()))
    newest: dict[str, list] = {}
    for row in conn.execute(sa.select(runs.c.case_id, runs.c.ranked).order_by(runs.c.created_at, runs.c.id)):
        newest[row.case_id] = row.ranked or []
    for case_id, ranked in newest.items():
        if not ranked:
            continue
        best = min(ranked, key=lambda r: r.get('rank', 0))
        syndrome_id, name = best.get('syndrome_id'), best.get('name')
        conn.execute(sa.update(cases).where(cases.c.id == case_id).values(
            predicted_syndrome_id=str(syndrome_id)[:64] if syndrome_id is not None else None,
            predicted_syndrome_name=str(name)[:200] if name else None))


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_predicted_name')
        batch_op.drop_index('ix_cases_predicted_created')
        batch_op.drop_index('ix_cases_diagnosis_syndrome')
        batch_op.drop_index('ix_cases_diagnosis_omim')
        batch_op.drop_column('diagnosis_name')
        batch_op.drop_column('diagnosis_omim')
        batch_op.drop_column('diagnosis_syndrome_id')
        batch_op.drop_column('predicted_syndrome_name')
        batch_op.drop_column('predicted_syndrome_id')

    with op.batch_alter_table('diagnoses', schema=None) as batch_op:
        batch_op.drop_index('ix_diagnoses_case_created')

    op.drop_table('diagnoses')
