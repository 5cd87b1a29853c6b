"""Shared fixtures: real databases (SQLite and PostgreSQL), the app, users, photos.

Database tests run against every backend in ``GESTALTLENS_TEST_BACKENDS`` (default: both). PostgreSQL
isolation is a fresh schema per test, created by the real migrations and dropped afterwards; SQLite gets
a fresh file. A backend that is listed but unreachable is an error, never a skip.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.auth import service as auth_service
from app.migrate import upgrade
from app.settings import Settings
from app.web.factory import create_app
from tests.browser_support import browser, server  # noqa: F401  (fixtures of the browser tests)

BACKENDS = [b.strip() for b in os.environ.get("GESTALTLENS_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
POSTGRES_URL = os.environ.get(
    "GESTALTLENS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PASSWORD = "correct horse battery"
# Hundreds of test apps start and stop; each reading the demo model in the background would add minutes of CPU
# on a 2-core machine. Tests that need the model read it on first use; tests/predictions/test_provider.py covers
# the preload itself (and servers started by tests inherit this unless they set it).
os.environ.setdefault("GESTALTLENS_PRELOAD_MODEL", "false")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'test.db').as_posix()}"
        return
    if request.param != "postgres":
        raise ValueError(f"unknown backend {request.param}")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # a listed backend must be there: fail loudly, never skip
        raise RuntimeError(f"PostgreSQL at {POSTGRES_URL} is not usable: {exc}") from exc
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    upgrade(db_url)
    return db_url


@pytest.fixture
def settings(migrated_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_url,
        secret_key="test-secret-key-that-is-long-enough",
        max_upload_mb=15,
    )


@pytest.fixture
def app(settings: Settings):
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@dataclass
class Account:
    username: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_account(app, username: str, role: str) -> Account:
    with app.state.sessions() as session:
        user = auth_service.create_user(session, username=username, password=PASSWORD, role=role)
        token = auth_service.create_api_token(session, user=user, name="test")
        session.commit()
    return Account(username=username, password=PASSWORD, role=role, token=token)


@pytest.fixture
def admin(app) -> Account:
    return make_account(app, "ada", "admin")


@pytest.fixture
def alice(app) -> Account:
    return make_account(app, "alice", "clinician")


@pytest.fixture
def bob(app) -> Account:
    return make_account(app, "bob", "clinician")


CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


def csrf_token(client: TestClient, path: str = "/login") -> str:
    """The token a page would hand to htmx (also makes the client hold the CSRF cookie)."""
    page = client.get(path)
    match = CSRF_META.search(page.text)
    assert match, f"no CSRF meta tag on {path}"
    return match.group(1)


def browser_headers(token: str) -> dict[str, str]:
    return {"X-CSRF-Token": token, "Origin": "http://testserver", "HX-Request": "true"}


def login(client: TestClient, account: Account) -> str:
    """Log in through the form like a browser; returns the CSRF token for later unsafe requests."""
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={"username": account.username, "password": account.password, "next": "/cases"},
        headers=browser_headers(token),
    )
    assert response.status_code == 204, response.text
    return token


def encode(array: np.ndarray, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut_rgb: np.ndarray) -> bytes:
    return encode(astronaut_rgb, "JPEG", quality=92)


def upload(client: TestClient, account: Account, data: bytes, **form: str) -> object:
    return client.post(
        "/api/v1/cases",
        files={"photo": ("patient-name.jpg", data, "application/octet-stream")},
        data=form,
        headers=account.headers,
    )


#: The job lease of the fault and lane tests (production: 90 s), so a dead worker's job is taken over quickly.
SHORT_LEASE_S = 3.0


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch):
    """This process reads the lease from its environment, like every worker and web process."""
    from app.settings import get_settings

    monkeypatch.setenv("GESTALTLENS_JOB_LEASE_S", str(SHORT_LEASE_S))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
