"""HTTP Basic credential cache: a verified credential is not re-hashed on every call, yet a password
change, a deactivation or a lock-out ends it at once. The cost is observed in the database: every
Argon2 check records a login attempt, a cache hit records none."""

from __future__ import annotations

import base64
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.auth.basic_cache import CredentialCache
from app.auth.models import LoginAttempt, User
from app.auth.security import hash_password
from tests.conftest import Account


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def attempts(app, *, succeeded: bool | None = None) -> int:
    query = select(func.count()).select_from(LoginAttempt)
    if succeeded is not None:
        query = query.where(LoginAttempt.succeeded.is_(succeeded))
    with app.state.sessions() as session:
        return session.scalar(query) or 0


def _update_user(app, username: str, **values: object) -> None:
    with app.state.sessions() as session:
        user = session.scalar(select(User).where(User.username == username))
        for key, value in values.items():
            setattr(user, key, value)
        session.commit()


def test_a_verified_credential_is_hashed_once(app, client: TestClient, alice: Account) -> None:
    headers = basic(alice.username, alice.password)
    for _ in range(4):
        assert client.post("/predict", json={"img": ""}, headers=headers).status_code == 200
    assert attempts(app, succeeded=True) == 1  # one Argon2 verification for four calls
    # A wrong password is never served from the cache, and is still counted.
    wrong = basic(alice.username, "wrong password!")
    assert client.post("/predict", json={"img": ""}, headers=wrong).status_code == 401
    assert attempts(app, succeeded=False) == 1


def test_password_change_and_deactivation_end_a_cached_credential(app, client: TestClient, alice: Account) -> None:
    old = basic(alice.username, alice.password)
    assert client.post("/predict", json={"img": ""}, headers=old).status_code == 200
    _update_user(app, alice.username, password_hash=hash_password("a brand new password"))
    assert client.post("/predict", json={"img": ""}, headers=old).status_code == 401
    new = basic(alice.username, "a brand new password")
    assert client.post("/predict", json={"img": ""}, headers=new).status_code == 200
    assert client.post("/predict", json={"img": ""}, headers=new).status_code == 200
    _update_user(app, alice.username, is_active=False)
    assert client.post("/predict", json={"img": ""}, headers=new).status_code == 401


def test_a_locked_out_account_stays_locked_with_a_cached_credential(app, client: TestClient, alice: Account) -> None:
    good = basic(alice.username, alice.password)
    assert client.post("/predict", json={"img": ""}, headers=good).status_code == 200
    bad = basic(alice.username, "not the password")
    for _ in range(app.state.settings.login_max_failures):
        assert client.post("/predict", json={"img": ""}, headers=bad).status_code == 401
    locked = client.post("/predict", json={"img": ""}, headers=good)
    assert locked.status_code == 429 and locked.json()["code"] == "too_many_attempts"


def test_cache_keys_expiry_and_bound() -> None:
    cache = CredentialCache("server secret", ttl_s=0.05, max_entries=2)
    key = cache.key("alice", "pw")
    assert "pw" not in key and key != CredentialCache("other secret").key("alice", "pw")
    assert cache.key("a", "b:c") != cache.key("a:b", "c")
    cache.put(key, user_id=1, username="alice", password_hash="$argon2id$x")
    assert cache.get(key) is not None
    time.sleep(0.06)
    assert cache.get(key) is None  # expired
    for i in range(3):
        cache.put(cache.key(f"u{i}", "pw"), user_id=i, username=f"u{i}", password_hash="h")
    assert len(cache) == 2 and cache.get(cache.key("u0", "pw")) is None  # least recently used went first
    cache.drop_user(2)
    assert cache.get(cache.key("u2", "pw")) is None and len(cache) == 1
