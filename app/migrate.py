"""Apply Alembic migrations programmatically: the only way GestaltLens creates or changes a schema."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.settings import PROJECT_ROOT


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if url:
        # ConfigParser interpolation treats '%' specially; URLs may contain escaped characters.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, *, engine: Engine | None = None, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (or through ``engine``'s connection) to ``revision``."""
    config = alembic_config(url)
    if engine is not None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return
    command.upgrade(config, revision)


class SchemaNotCurrent(RuntimeError):
    """The database has no schema yet, or one older or newer than this code's migrations.

    Commands that open the database (``user add``, ``gaze …``, ``demo-cohort``) raise this before touching a table,
    so a fresh data directory gets "run ``gestaltlens db upgrade``" instead of SQL's "no such table: users"."""


def schema_problem(engine: Engine) -> str | None:
    """Why the database behind ``engine`` does not match this code's migrations, or None when it is at head."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    head = scripts.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return None
    if current is None:
        return "has no schema yet: run `gestaltlens db upgrade` (`gestaltlens serve` also does it when it starts)"
    known = {revision.revision for revision in scripts.walk_revisions()}
    if current not in known:
        return (f"is at revision {current}, which this version of GestaltLens does not know (migrated by a newer "
                f"version?); this one expects {head}")
    return f"is at revision {current}, this version expects {head}: run `gestaltlens db upgrade`"


def command_sessions(url: str | None = None) -> sessionmaker[Session]:
    """Sessions for a command-line command (the configured database when ``url`` is None), after checking the
    schema is the one this code expects. Every mapped class is imported first, so relationships between
    domains resolve whichever command runs."""
    from sqlalchemy.engine import make_url

    import app.models  # noqa: F401
    from app.db import make_engine, make_sessionmaker
    from app.settings import get_settings

    url = url or get_settings().resolved_database_url
    engine = make_engine(url)
    problem = schema_problem(engine)
    if problem is not None:
        engine.dispose()
        raise SchemaNotCurrent(f"the database {make_url(url).render_as_string(hide_password=True)} {problem}")
    return make_sessionmaker(engine)
