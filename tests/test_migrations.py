"""The migrations are the schema: they must agree with the ORM on every backend, and round-trip."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import app.models  # noqa: F401
from app.db import Base, make_engine
from app.migrate import upgrade


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_orm_metadata_matches_migrations(migrated_url: str) -> None:
    assert _diff(migrated_url) == []


def test_migrations_create_every_table(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_downgrade_removes_tables_and_upgrade_restores_them(db_url: str) -> None:
    from alembic import command

    from app.migrate import alembic_config

    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "base")
    engine = make_engine(db_url)
    try:
        assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    upgrade(db_url)
    assert _diff(db_url) == []


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()


def test_sqlite_downgrade_rebuilds_tables_without_cascading_into_their_children(tmp_path) -> None:
    """Batch migrations rebuild SQLite tables by DROP + rename; with foreign keys on that DROP would
    silently empty every child table (prediction runs, jobs, explanations...)."""
    from alembic import command

    from app.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'down.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (username, password_hash, role, created_at, is_active) "
                              "VALUES ('u', 'x', 'admin', '2026-01-01', 1)"))
            uid = conn.execute(text("SELECT id FROM users")).scalar()
            conn.execute(text(
                "INSERT INTO cases (id, owner_id, created_at, photo_path, photo_media_type, photo_sha256, "
                "photo_width, photo_height, source_format, aligned_path, face_count, face_index, face_box, "
                "landmarks, detector_score, align_matrix, align_residual) VALUES ('c1', :uid, '2026-01-01', "
                "'p', 'image/jpeg', 'h', 1, 1, 'jpeg', 'a', 1, 0, '[]', '[]', 1.0, '[]', 0.0)"), {"uid": uid})
            conn.execute(text("INSERT INTO prediction_runs (case_id, created_at, model_id, model_version, "
                              "ranked_by, ranked) VALUES ('c1', '2026-01-01', 'demo', '1', 'softmax', '[]')"))
        engine.dispose()
        command.downgrade(alembic_config(url), "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM cases")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM prediction_runs")).scalar() == 1
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_0011_ties_similarity_maps_to_the_case_they_compare_with(db_url: str) -> None:
    """0011 fills ``reference_case_id`` from ``similarity:case:<id>``, drops maps whose case is gone, and the
    foreign key then removes a case's similarity maps with it (ON DELETE CASCADE), on every backend."""
    from alembic import command

    from app.migrate import alembic_config

    command.upgrade(alembic_config(db_url), "0010")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (username, password_hash, role, created_at, is_active) "
                              "VALUES ('u', 'x', 'admin', '2026-01-01', :on)"), {"on": True})
            uid = conn.execute(text("SELECT id FROM users")).scalar()
            for case_id in ("c1", "c2"):
                conn.execute(text(
                    "INSERT INTO cases (id, owner_id, created_at, photo_path, photo_media_type, photo_sha256, "
                    "photo_width, photo_height, source_format, aligned_path, face_count, face_index, face_box, "
                    "landmarks, detector_score, align_matrix, align_residual) VALUES (:id, :uid, '2026-01-01', "
                    "'p', 'image/jpeg', 'h', 1, 1, 'jpeg', 'a', 1, 0, '[]', '[]', 1.0, '[]', 0.0)"),
                    {"id": case_id, "uid": uid})
            for row_id, objective in (("e1", "similarity:case:c2"), ("e2", "similarity:case:gone"), ("e3", "logit")):
                conn.execute(text(
                    "INSERT INTO explanations (id, case_id, model_id, model_version, method, target_id, target_index, "
                    "target_name, objective, subject, params, mode, params_key, state, created_at) VALUES (:id, 'c1', "
                    "'demo', '1', 'saliency', 'syn_a', 0, 'A', :objective, '', '{}', 'exact', :key, 'done', "
                    "'2026-01-01')"), {"id": row_id, "objective": objective, "key": row_id})
        engine.dispose()
        upgrade(db_url)
        with engine.begin() as conn:
            rows = dict(conn.execute(text("SELECT id, reference_case_id FROM explanations")).all())
            assert rows == {"e1": "c2", "e3": None}
            conn.execute(text("DELETE FROM cases WHERE id = 'c2'"))
            assert [r[0] for r in conn.execute(text("SELECT id FROM explanations"))] == ["e3"]
        engine.dispose()
        command.downgrade(alembic_config(db_url), "0010")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM explanations")).scalar() == 1
    finally:
        engine.dispose()
