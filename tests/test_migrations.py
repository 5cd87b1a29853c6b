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
