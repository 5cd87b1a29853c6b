"""Accounts: Argon2 passwords, hashed revocable sessions and tokens, throttling, first-run setup, CSRF."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth.models import ApiToken, AuthSession, User
from app.auth.security import token_digest
from tests.conftest import PASSWORD, Account, browser_headers, csrf_token, login


def test_password_is_stored_as_argon2_and_tokens_only_as_digests(app, alice: Account) -> None:
    with app.state.sessions() as session:
        user = session.scalar(select(User).where(User.username == "alice"))
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert alice.token not in stored
    assert token_digest(alice.token) in stored


def test_login_sets_a_hardened_session_cookie(client: TestClient, alice: Account) -> None:
    token = csrf_token(client)
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "next": "/cases"}, headers=browser_headers(token)
    )
    assert response.status_code == 204
    assert response.headers["hx-redirect"] == "/cases"
    cookie = response.headers["set-cookie"]
    assert "gl_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert client.get("/api/v1/cases").status_code == 200


def test_login_refuses_open_redirects(client: TestClient, alice: Account) -> None:
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "next": "//evil.example/phish"},
        headers=browser_headers(token),
    )
    assert response.headers["hx-redirect"] == "/cases"


def test_wrong_password_is_rejected_with_a_readable_page(client: TestClient, alice: Account) -> None:
    token = csrf_token(client)
    response = client.post(
        "/login", data={"username": "alice", "password": "nope-nope-nope"}, headers=browser_headers(token)
    )
    assert response.status_code == 400
    assert "wrong password" in response.text
    assert "gl_session" not in response.headers.get("set-cookie", "")


def test_logout_really_revokes_the_session(app, client: TestClient, alice: Account) -> None:
    token = login(client, alice)
    session_cookie = client.cookies.get("gl_session")
    assert client.get("/api/v1/cases").status_code == 200
    assert client.post("/logout", headers=browser_headers(token)).status_code == 204
    with app.state.sessions() as session:
        row = session.scalar(select(AuthSession).where(AuthSession.token_hash == token_digest(session_cookie)))
        assert row.revoked_at is not None
    # Replaying the old cookie (a stolen copy) no longer works.
    client.cookies.set("gl_session", session_cookie)
    assert client.get("/api/v1/cases").status_code == 401


def test_login_is_throttled_after_repeated_failures(client: TestClient, alice: Account) -> None:
    token = csrf_token(client)
    headers = browser_headers(token)
    for _ in range(5):
        failed = client.post("/login", data={"username": "alice", "password": "wrong-guess-1"}, headers=headers)
        assert failed.status_code == 400
    # Even the right password is refused while locked out: the throttle runs before the check.
    locked = client.post("/login", data={"username": "alice", "password": PASSWORD}, headers=headers)
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.text


def test_bearer_tokens_authenticate_and_unknown_ones_do_not(client: TestClient, alice: Account) -> None:
    assert client.get("/api/v1/cases", headers=alice.headers).status_code == 200
    bad = client.get("/api/v1/cases", headers={"Authorization": "Bearer glt_not-a-real-token"})
    assert bad.status_code == 401
    assert bad.json() == {"detail": bad.json()["detail"], "code": "not_authenticated"}


def test_revoked_api_token_stops_working(app, client: TestClient, alice: Account) -> None:
    from app.auth import service

    with app.state.sessions() as session:
        user = service.get_user_by_name(session, username="alice")
        assert service.revoke_api_tokens(session, user=user) == 1
        session.commit()
    assert client.get("/api/v1/cases", headers=alice.headers).status_code == 401


def test_disabled_user_loses_access(app, client: TestClient, alice: Account) -> None:
    with app.state.sessions() as session:
        session.scalar(select(User).where(User.username == "alice")).is_active = False
        session.commit()
    assert client.get("/api/v1/cases", headers=alice.headers).status_code == 401


def test_first_run_setup_creates_the_admin_once(app, client: TestClient, caplog) -> None:
    assert client.get("/login", follow_redirects=False).headers["location"] == "/setup"
    page = client.get("/setup")
    assert page.status_code == 200
    code = app.state.setup_code
    assert re.fullmatch(r"[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}", code)
    console = " ".join(r.getMessage() for r in caplog.get_records("setup") + caplog.records)
    assert code in console  # printed to the server console, nowhere else
    assert code not in page.text
    token = csrf_token(client, "/setup")
    form = {"username": "root-admin", "password": PASSWORD, "password_repeat": PASSWORD}
    wrong = client.post("/setup", data={**form, "code": "000000-000000-000000"}, headers=browser_headers(token))
    assert wrong.status_code == 400
    assert "setup code is wrong" in wrong.text
    ok = client.post("/setup", data={**form, "code": code.lower()}, headers=browser_headers(token))
    assert ok.status_code == 204
    with app.state.sessions() as session:
        assert session.scalar(select(User.role).where(User.username == "root-admin")) == "admin"
    # Now logged in, and the setup page is gone for everyone.
    assert client.get("/api/v1/cases").status_code == 200
    assert client.get("/setup").status_code == 404
    again = client.post("/setup", data={**form, "code": code}, headers=browser_headers(token))
    assert again.status_code == 404


def test_setup_needs_matching_passwords_and_a_strong_one(app, client: TestClient) -> None:
    client.get("/setup")
    token = csrf_token(client, "/setup")
    code = app.state.setup_code
    short = client.post(
        "/setup",
        data={"code": code, "username": "x-admin", "password": "short", "password_repeat": "short"},
        headers=browser_headers(token),
    )
    assert short.status_code == 400 and "at least 10" in short.text
    differ = client.post(
        "/setup",
        data={"code": code, "username": "x-admin", "password": PASSWORD, "password_repeat": PASSWORD + "!"},
        headers=browser_headers(token),
    )
    assert differ.status_code == 400 and "differ" in differ.text


def test_csrf_token_is_required_for_cookie_sessions(client: TestClient, alice: Account, astronaut_jpeg: bytes) -> None:
    token = login(client, alice)
    files = {"photo": ("x.jpg", astronaut_jpeg, "image/jpeg")}
    no_token = client.post("/api/v1/cases", files=files, headers={"Origin": "http://testserver"})
    assert no_token.status_code == 403 and no_token.json()["code"] == "csrf_failed"
    forged = client.post("/api/v1/cases", files=files, headers={**browser_headers("0" * 64)})
    assert forged.status_code == 403
    cross_site = client.post(
        "/api/v1/cases", files=files, headers={**browser_headers(token), "Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    fetch_cross = client.post(
        "/api/v1/cases", files=files, headers={**browser_headers(token), "Sec-Fetch-Site": "cross-site"}
    )
    assert fetch_cross.status_code == 403
    ok = client.post("/api/v1/cases", files=files, headers=browser_headers(token))
    assert ok.status_code == 201, ok.text


def test_login_form_is_csrf_protected(client: TestClient, alice: Account) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


def test_bearer_requests_need_no_csrf_token(client: TestClient, alice: Account, astronaut_jpeg: bytes) -> None:
    response = client.post(
        "/api/v1/cases", files={"photo": ("x.jpg", astronaut_jpeg, "image/jpeg")}, headers=alice.headers
    )
    assert response.status_code == 201


def test_admin_can_add_users_from_the_users_page(client: TestClient, admin: Account, alice: Account) -> None:
    token = login(client, admin)
    page = client.get("/admin/users")
    assert page.status_code == 200 and "alice" in page.text
    created = client.post(
        "/admin/users",
        data={"username": "carol", "password": PASSWORD, "role": "clinician"},
        headers=browser_headers(token),
    )
    assert created.status_code == 200 and "carol" in created.text
    taken = client.post(
        "/admin/users", data={"username": "carol", "password": PASSWORD, "role": "clinician"},
        headers=browser_headers(token),
    )
    assert taken.status_code == 400 and "taken" in taken.text


def test_clinicians_cannot_reach_user_administration(client: TestClient, alice: Account) -> None:
    assert client.get("/admin/users", headers=alice.headers).status_code == 403


def test_setup_code_guessing_is_throttled(app, client: TestClient) -> None:
    client.get("/setup")
    token = csrf_token(client, "/setup")
    form = {"username": "x-admin", "password": PASSWORD, "password_repeat": PASSWORD, "code": "000000-000000-000000"}
    for _ in range(5):
        assert client.post("/setup", data=form, headers=browser_headers(token)).status_code == 400
    # The right code is refused too while the address is locked out.
    locked = client.post("/setup", data={**form, "code": app.state.setup_code}, headers=browser_headers(token))
    assert locked.status_code == 429


def test_an_expired_session_returns_to_the_page_not_to_the_button(client: TestClient, alice: Account) -> None:
    """After the session ends, the next click on a page (an htmx action, a form post) asks for the login
    again; logging in must land on that page, not on the action's own address (405, or a bare fragment)."""
    token = login(client, alice)
    client.post("/logout", headers=browser_headers(token))
    page = "http://testserver/cases/abc123?tab=maps"
    explain = client.post("/cases/abc123/explanations", headers={**browser_headers(token), "HX-Current-URL": page},
                          follow_redirects=False)
    assert explain.status_code == 401 and explain.headers["hx-redirect"] == "/login?next=/cases/abc123%3Ftab%3Dmaps"
    search = client.get("/cases/abc123/phenotype/search?hpo_q=eye",
                        headers={"HX-Request": "true", "HX-Current-URL": page})
    assert search.headers["hx-redirect"] == "/login?next=/cases/abc123%3Ftab%3Dmaps"
    form = client.post("/cases/abc123/phenotype", headers={"Origin": "http://testserver", "X-CSRF-Token": token,
                                                         "Accept": "text/html", "Referer": page},
                       follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"] == "/login?next=/cases/abc123%3Ftab%3Dmaps"
    # another site's page is never a place to return to; a plain page load returns to itself
    foreign = client.post("/cases/abc123/explanations", follow_redirects=False, headers={
        **browser_headers(token), "HX-Current-URL": "https://evil.example/cases"})
    assert foreign.headers["hx-redirect"] == "/login?next=/cases"
    direct = client.get("/cases/abc123?tab=maps", headers={"Accept": "text/html"}, follow_redirects=False)
    assert direct.headers["location"] == "/login?next=/cases/abc123%3Ftab%3Dmaps"
    # every filter of the page survives the round trip through the login form
    listed = client.get("/cases?q=x&sort=name", headers={"Accept": "text/html"}, follow_redirects=False)
    assert listed.headers["location"] == "/login?next=/cases%3Fq%3Dx%26sort%3Dname"
    form_page = client.get(listed.headers["location"])
    assert 'value="/cases?q=x&amp;sort=name"' in form_page.text
