"""Rating studies (cases, methods, raters, pinned maps, per-rater map orders) and append-only ratings.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:31:54.398896
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rating_studies',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('target_rule', sa.String(length=16), nullable=False),
    sa.Column('blinded', sa.Boolean(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_rating_studies_created_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rating_studies'))
    )
    op.create_table('rating_study_cases',
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('target_name', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_rating_study_cases_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_rating_study_cases_study_id_rating_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', 'case_id', name=op.f('pk_rating_study_cases')),
    sa.UniqueConstraint('study_id', 'position', name='uq_rating_study_cases_position')
    )
    with op.batch_alter_table('rating_study_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_study_cases_case_id'), ['case_id'], unique=False)

    op.create_table('rating_study_methods',
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=40), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_rating_study_methods_study_id_rating_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', 'method', name=op.f('pk_rating_study_methods'))
    )
    op.create_table('rating_study_orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('rater_id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('methods', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_rating_study_orders_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rater_id'], ['users.id'], name=op.f('fk_rating_study_orders_rater_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_rating_study_orders_study_id_rating_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rating_study_orders')),
    sa.UniqueConstraint('study_id', 'rater_id', 'case_id', name='uq_rating_study_orders_key')
    )
    with op.batch_alter_table('rating_study_orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_study_orders_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_study_orders_rater_id'), ['rater_id'], unique=False)

    op.create_table('rating_study_raters',
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_rating_study_raters_study_id_rating_studies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rating_study_raters_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', 'user_id', name=op.f('pk_rating_study_raters'))
    )
    with op.batch_alter_table('rating_study_raters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_study_raters_user_id'), ['user_id'], unique=False)

    op.create_table('rating_study_maps',
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('explanation_id', sa.String(length=32), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_rating_study_maps_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['explanation_id'], ['explanations.id'], name=op.f('fk_rating_study_maps_explanation_id_explanations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_rating_study_maps_study_id_rating_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', 'explanation_id', name=op.f('pk_rating_study_maps')),
    sa.UniqueConstraint('study_id', 'case_id', 'method', name='uq_rating_study_maps_slot')
    )
    with op.batch_alter_table('rating_study_maps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_study_maps_explanation_id'), ['explanation_id'], unique=False)

    op.create_table('ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('explanation_id', sa.String(length=32), nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('study_id', sa.String(length=32), nullable=True),
    sa.Column('rater_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=40), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('blinded', sa.Boolean(), nullable=False),
    sa.Column('blinded_label', sa.String(length=4), nullable=True),
    sa.Column('score', sa.SmallInteger(), nullable=False),
    sa.Column('regions', sa.JSON(), nullable=False),
    sa.Column('context', sa.Boolean(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('score >= 1 AND score <= 5', name=op.f('ck_ratings_score_range')),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_ratings_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['explanation_id'], ['explanations.id'], name=op.f('fk_ratings_explanation_id_explanations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rater_id'], ['users.id'], name=op.f('fk_ratings_rater_id_users'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['study_id'], ['rating_studies.id'], name=op.f('fk_ratings_study_id_rating_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ratings'))
    )
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ratings_case_id'), ['case_id'], unique=False)
        batch_op.create_index('ix_ratings_explanation', ['explanation_id'], unique=False)
        batch_op.create_index('ix_ratings_rater_created', ['rater_id', 'created_at'], unique=False)
        batch_op.create_index('ix_ratings_study_rater_explanation', ['study_id', 'rater_id', 'explanation_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.drop_index('ix_ratings_study_rater_explanation')
        batch_op.drop_index('ix_ratings_rater_created')
        batch_op.drop_index('ix_ratings_explanation')
        batch_op.drop_index(batch_op.f('ix_ratings_case_id'))

    op.drop_table('ratings')
    with op.batch_alter_table('rating_study_maps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_study_maps_explanation_id'))

    op.drop_table('rating_study_maps')
    with op.batch_alter_table('rating_study_raters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_study_raters_user_id'))

    op.drop_table('rating_study_raters')
    with op.batch_alter_table('rating_study_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_study_orders_rater_id'))
        batch_op.drop_index(batch_op.f('ix_rating_study_orders_case_id'))

    op.drop_table('rating_study_orders')
    op.drop_table('rating_study_methods')
    with op.batch_alter_table('rating_study_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_study_cases_case_id'))

    op.drop_table('rating_study_cases')
    op.drop_table('rating_studies')
