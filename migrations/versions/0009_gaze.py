"""Gaze: participants, fixation imports and fixations; the kind of a study (rating or attention).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 20:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rating_studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='rating', nullable=False))
        batch_op.add_column(sa.Column('settings', sa.JSON(), nullable=True))
    op.create_table('gaze_participants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('group', sa.String(length=40), nullable=False),
    sa.Column('experience_years', sa.Float(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_gaze_participants_user_id_users'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gaze_participants')),
    sa.UniqueConstraint('code', name=op.f('uq_gaze_participants_code')),
    sa.UniqueConstraint('user_id', name=op.f('uq_gaze_participants_user_id'))
    )
    with op.batch_alter_table('gaze_participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gaze_participants_group'), ['group'], unique=False)
    op.create_table('gaze_imports',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('format', sa.String(length=24), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('fixations', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.String(length=32), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_gaze_imports_created_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_gaze_imports_study_id_rating_studies'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gaze_imports')),
    sa.UniqueConstraint('sha256', name=op.f('uq_gaze_imports_sha256'))
    )
    with op.batch_alter_table('gaze_imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gaze_imports_study_id'), ['study_id'], unique=False)
    op.create_table('gaze_fixations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('import_id', sa.String(length=32), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('photo_x', sa.Float(), nullable=False),
    sa.Column('photo_y', sa.Float(), nullable=False),
    sa.Column('aligned_x', sa.Float(), nullable=False),
    sa.Column('aligned_y', sa.Float(), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('onset_ms', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_gaze_fixations_case_id_cases'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['import_id'], ['gaze_imports.id'], name=op.f('fk_gaze_fixations_import_id_gaze_imports'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['participant_id'], ['gaze_participants.id'],
                            name=op.f('fk_gaze_fixations_participant_id_gaze_participants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gaze_fixations'))
    )
    with op.batch_alter_table('gaze_fixations', schema=None) as batch_op:
        batch_op.create_index('ix_gaze_fixations_case_participant', ['case_id', 'participant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_gaze_fixations_import_id'), ['import_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_gaze_fixations_participant_id'), ['participant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gaze_fixations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gaze_fixations_participant_id'))
        batch_op.drop_index(batch_op.f('ix_gaze_fixations_import_id'))
        batch_op.drop_index('ix_gaze_fixations_case_participant')
    op.drop_table('gaze_fixations')
    with op.batch_alter_table('gaze_imports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gaze_imports_study_id'))
    op.drop_table('gaze_imports')
    with op.batch_alter_table('gaze_participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gaze_participants_group'))
    op.drop_table('gaze_participants')
    with op.batch_alter_table('rating_studies', schema=None) as batch_op:
        batch_op.drop_column('settings')
        batch_op.drop_column('kind')
