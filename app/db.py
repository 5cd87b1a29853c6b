"""Database plumbing shared by every domain: the declarative base, engines and sessions.

The schema is created only by Alembic migrations (see ``app/migrate.py``); this module never calls
``create_all``.  SQLite is the embedded default, so its connections get foreign keys and WAL turned on.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Random, unguessable identifiers: case ids appear in URLs and must not reveal counts."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use app.db.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class UnstorableText(ValueError):
    """A string bound to a statement holds NUL or another control character.

    PostgreSQL cannot store NUL in text at all (the driver raises, the request became a 500) and SQLite
    would store it silently; refusing every such string before it reaches either backend gives the same
    4xx everywhere, for every route, whatever parameter carried it. Tab, newline and carriage return stay
    allowed (comments have lines)."""


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 but line breaks, DEL, C1


def has_control_chars(value: str) -> bool:
    return _CONTROL_CHARS.search(value) is not None


def _check_params(params: Any) -> None:
    values = params.values() if isinstance(params, dict) else params if isinstance(params, list | tuple) else ()
    for value in values:
        if isinstance(value, str):
            if _CONTROL_CHARS.search(value):
                raise UnstorableText("text with NUL or control characters cannot be stored or searched")
        elif isinstance(value, dict | list | tuple):
            _check_params(value)


def _refuse_control_chars(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any,
                          _executemany: bool) -> None:
    _check_params(parameters)


def secure_sqlite_file(url: str) -> None:
    """Create the SQLite file (and keep it, its WAL and shared-memory files) readable by its owner only.

    Photos are stored 0600; the database holds the same patients' data. SQLite creates the -wal and -shm
    files with the database file's mode, so making the database 0600 before the first connection covers
    them; existing files made before this rule are tightened too."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        secure_sqlite_file(url)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", lambda *_: secure_sqlite_file(url))
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
    event.listen(engine, "before_cursor_execute", _refuse_control_chars)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session that is closed afterwards; callers commit explicitly."""
    session = factory()
    try:
        yield session
    finally:
        session.close()
