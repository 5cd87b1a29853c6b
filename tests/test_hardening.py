"""Issue 13's defects, one test each (each failed before its fix): caches, audit after erasure, NUL bytes,
login throttling races, date overflow, CSRF with odd Authorization headers, requests that must be
refused, unhandled errors, file modes and access logs. Fault injection with real processes is in
tests/test_faults.py; the schema fuzz in tests/test_fuzz_api.py."""

from __future__ import annotations

import base64
import json
import logging
import re
import stat
import threading
import time
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth.models import LoginAttempt
from app.cases.models import Case
from app.settings import Settings
from app.synth.generate import generate_one
from app.web.factory import create_app
from app.web.headers import CACHEABLE_PREFIXES
from app.web.logging import DropQueryString
from tests.conftest import Account, browser_headers, csrf_token, login, make_account, upload


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return generate_one(seed=777, class_id="syn_b", index=0, severity=1.0).jpeg


def wait_for(client: TestClient, account: Account, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=account.headers).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def _explained_case(client: TestClient, account: Account, face: bytes, target: str = "syn_b") -> tuple[dict, dict]:
    case = upload(client, account, face).json()
    body = client.post(f"/api/v1/cases/{case['id']}/explanations",
                       json={"methods": ["saliency", "gradcam"], "target": target}, headers=account.headers).json()
    assert wait_for(client, account, body["job_id"])["state"] == "done"
    return case, body


# --- 3. every response with patient pixels or data is no-store -------------------------------------------


def test_every_get_route_answers_no_store_except_the_cacheable_assets(app, client: TestClient, alice: Account,
                                                                      face_jpeg: bytes) -> None:
    case, body = _explained_case(client, alice, face_jpeg)
    ids = {"case_id": case["id"], "explanation_id": body["explanations"][0]["id"], "job_id": body["job_id"],
           "kind": "signed"}
    photo_overlay = client.get(f"/api/v1/explanations/{ids['explanation_id']}/map.png?space=photo&view=overlay",
                               headers=alice.headers)
    assert photo_overlay.status_code == 200 and photo_overlay.headers["cache-control"] == "no-store"
    checked = 0
    # This test is about caching, not about each route's own errors: a 500 must be no-store as well.
    tolerant = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    for route in iter_route_contexts(app.routes):
        if "GET" not in (getattr(route, "methods", None) or ()):
            continue
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: ids.get(m.group(1), "1"), route.path)
        response = tolerant.get(path, headers=alice.headers, follow_redirects=False)
        checked += 1
        if path.startswith(CACHEABLE_PREFIXES):
            continue
        assert "no-store" in response.headers.get("cache-control", ""), (path, response.status_code,
                                                                           response.headers.get("cache-control"))
        assert "max-age" not in response.headers["cache-control"], path
    assert checked >= 25


# --- 4. erasure leaves no health data in the audit log ----------------------------------------------------


def test_erasure_leaves_who_did_what_when_but_no_health_data(app, client: TestClient, alice: Account,
                                                             face_jpeg: bytes) -> None:
    case, _ = _explained_case(client, alice, face_jpeg, target="syn_b")
    assert client.get(f"/api/v1/cases/{case['id']}/explanations/figure.png?target=syn_b",
                      headers=alice.headers).status_code == 200
    with app.state.sessions() as session:
        sha = session.get(Case, case["id"]).photo_sha256
        # A row written before the rule (older versions kept the target): erasure must clean it too.
        session.add(AuditEvent(action="explain", user_id=None, username="alice", case_id=case["id"],
                               detail={"methods": ["saliency"], "target": "syn_b"}))
        session.commit()
    assert client.delete(f"/api/v1/cases/{case['id']}", headers=alice.headers).status_code == 204
    with app.state.sessions() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.case_id == case["id"])))
    actions = {e.action for e in events}
    assert {"upload", "explain", "export", "delete"} <= actions
    assert all(e.username == "alice" and e.created_at for e in events)
    stored = json.dumps([e.detail for e in events])
    assert "syn_b" not in stored and sha not in stored and "target" not in stored and "sha256" not in stored


# --- 5. NUL and control characters: 4xx on every backend, logged in or not ------------------------------


def _basic(text: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


def test_nul_bytes_are_refused_with_a_4xx_everywhere(app, client: TestClient, admin: Account, alice: Account,
                                                     face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    for query in ("q=a%00b", "diagnosis=%00", "predicted=x%00", "owner=%00ada", "created_from=2020%0001"):
        response = client.get(f"/api/v1/cases?{query}", headers=admin.headers)
        assert 400 <= response.status_code < 500 and response.json()["code"], (query, response.status_code)
    figure = client.get(f"/api/v1/cases/{case['id']}/explanations/figure.png?target=a%00b", headers=alice.headers)
    assert 400 <= figure.status_code < 500 and figure.json()["code"]
    study = client.post("/api/v1/studies", headers=admin.headers,
                        json={"name": "n", "cases": [case["id"]], "methods": ["saliency"], "raters": ["al\x00ice"]})
    assert 400 <= study.status_code < 500 and study.json()["code"]
    comment = client.post("/api/v1/studies", headers=admin.headers,
                          json={"name": "a\x00b", "cases": [case["id"]], "methods": ["saliency"], "raters": []})
    assert 400 <= comment.status_code < 500
    rerank = f"/api/v1/cases/{case['id']}/predictions"
    for method, path in (("GET", "/api/v1/cases"), ("POST", "/predict"), ("POST", rerank)):
        response = client.request(method, path, headers=_basic("\x00:x"), json={"img": ""})
        assert response.status_code == 401 and response.json()["code"], (path, response.status_code)
    assert client.get("/status", headers=_basic("\x00:x")).status_code == 200  # public: the header is ignored
    anonymous = TestClient(app, base_url="http://testserver")
    token = csrf_token(anonymous)
    refused = anonymous.post("/login", data={"username": "a\x00b", "password": "x"}, headers=browser_headers(token))
    assert 400 <= refused.status_code < 500
    with app.state.sessions() as session:  # nothing with a NUL was stored anywhere
        assert not [a for a in session.scalars(select(LoginAttempt)) if "\x00" in a.username]


# --- 6. login throttling cannot be raced or reset ---------------------------------------------------------


def test_simultaneous_wrong_passwords_check_at_most_the_limit(app, alice: Account) -> None:
    policy = auth_service.ThrottlePolicy(max_failures=5, window=__import__("datetime").timedelta(minutes=15))
    outcomes: list[str] = []
    barrier = threading.Barrier(30)

    def attempt() -> None:
        with app.state.sessions() as session:
            barrier.wait()
            try:
                auth_service.authenticate(session, username="alice", password="wrong password!", ip="10.0.0.1",
                                          policy=policy)
                outcomes.append("checked")
            except auth_service.LoginThrottled:
                outcomes.append("throttled")
            session.commit()

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == 30
    assert outcomes.count("checked") <= 5, outcomes.count("checked")
    with app.state.sessions() as session:
        recorded = session.scalars(select(LoginAttempt).where(LoginAttempt.username == "alice")).all()
    assert len(recorded) == outcomes.count("checked")  # refused attempts were never checked, so not counted


def test_a_successful_login_does_not_reset_the_per_address_cap(app, alice: Account) -> None:
    from datetime import timedelta

    policy = auth_service.ThrottlePolicy(max_failures=1, window=timedelta(minutes=15))  # per address: 4
    with app.state.sessions() as session:
        for round_ in range(2):
            for name in (f"nobody{round_}a", f"nobody{round_}b"):
                assert auth_service.authenticate(session, username=name, password="x", ip="10.0.0.2",
                                                 policy=policy) is None
                session.commit()
            if round_ < 1:  # the attacker's own account succeeds in between
                assert auth_service.authenticate(session, username="alice", password=alice.password,
                                                 ip="10.0.0.2", policy=policy) is not None
                session.commit()
        with pytest.raises(auth_service.LoginThrottled):
            auth_service.authenticate(session, username="alice", password=alice.password, ip="10.0.0.2",
                                      policy=policy)


# --- 8. unhandled errors and a database outage stay JSON with our headers ---------------------------------


def test_an_unhandled_error_is_json_with_the_security_headers(settings: Settings) -> None:
    application = create_app(settings)

    @application.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(application, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/boom")
    application.state.engine.dispose()
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "code": "internal_error"}
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_an_unreachable_database_is_a_json_503_and_readiness_says_so(tmp_path: Path) -> None:
    down = Settings(data_dir=tmp_path / "data", database_url="postgresql+psycopg://postgres@127.0.0.1:9/test",
                    secret_key="test-secret-key-that-is-long-enough")
    application = create_app(down)
    with TestClient(application, raise_server_exceptions=False) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] == "unavailable"
        response = client.get("/api/v1/cases", headers={"Authorization": "Bearer whatever"})
        assert response.status_code == 503 and response.json()["code"] == "database_unavailable"
        assert response.headers["x-content-type-options"] == "nosniff" and response.headers["retry-after"]
    application.state.engine.dispose()


def test_readiness_reports_database_and_broker(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok", "broker": "not_used",
                                             "storage": "ok", "model": "not_loaded"}  # preload is off in tests



# --- 9. dates at the end of the calendar ----------------------------------------------------------------


def test_the_last_day_of_the_calendar_is_a_valid_filter(client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    upload(client, alice, face_jpeg)
    for query in ("created_to=9999-12-31", "created_from=0001-01-01&created_to=9999-12-31", "created_from=9999-12-31"):
        response = client.get(f"/api/v1/cases?{query}", headers=alice.headers)
        assert response.status_code == 200, (query, response.text)
    assert client.get("/api/v1/cases?created_to=9999-12-31", headers=alice.headers).json()["total"] == 1


# --- 10. CSRF: an empty Authorization header or HTTP Basic does not skip the checks ----------------------


def test_an_empty_authorization_header_does_not_skip_csrf(app, client: TestClient, alice: Account,
                                                          face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    login(client, alice)
    for authorization in ("", " ", "Bearer", "Bearer ", "Basic " + base64.b64encode(b"alice:x").decode(), "Foo bar"):
        refused = client.delete(f"/api/v1/cases/{case['id']}", headers={"Authorization": authorization})
        assert refused.status_code in (401, 403), (authorization, refused.status_code)
        if refused.status_code == 403:
            assert refused.json()["code"] == "csrf_failed"
    assert client.get(f"/api/v1/cases/{case['id']}").status_code == 200  # still there


def test_a_malformed_cookie_beside_the_session_does_not_skip_csrf(app, client: TestClient, alice: Account,
                                                                  face_jpeg: bytes) -> None:
    """Python's SimpleCookie dropped the whole Cookie header when one cookie in it was malformed, so the CSRF
    middleware saw no session while authentication (Starlette's parser) did: a same-site page that planted
    ``theme=dark mode`` could delete cases or create admins with the victim's session."""
    case = upload(client, alice, face_jpeg).json()
    token = login(client, alice)
    session, csrf = client.cookies.get("gl_session"), client.cookies.get("gl_csrf")
    assert session and csrf
    client.cookies.clear()
    url = f"/api/v1/cases/{case['id']}"
    for planted in ('x={"a":1}', "theme=dark mode", 'q="unterminated', "emoji=\u00e9t\u00e9"):
        for cookie in (f"{planted}; gl_session={session}; gl_csrf={csrf}", f"gl_session={session}; {planted}"):
            refused = client.delete(url, headers={"Cookie": cookie.encode(), "Origin": "https://evil.example"})
            assert refused.status_code == 403, (cookie, refused.status_code, refused.text)
            assert refused.json()["code"] == "csrf_failed"
    assert client.get(url, headers={"Cookie": f"gl_session={session}"}).status_code == 200  # still there
    # a real browser with such a cookie and the page's token still works
    done = client.delete(url, headers={"Cookie": f"theme=dark mode; gl_session={session}; gl_csrf={csrf}",
                                       "Origin": "http://testserver", "X-CSRF-Token": token})
    assert done.status_code == 204, done.text


def test_http_basic_only_authenticates_the_gestaltmatcher_routes(client: TestClient, alice: Account) -> None:
    basic = _basic(f"alice:{alice.password}")
    assert client.get("/api/v1/cases", headers=basic).status_code == 401
    assert client.get("/status", headers=basic).status_code == 200


# --- 11. accepted that should be refused ----------------------------------------------------------------


def test_requests_that_must_be_refused_are(app, client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    case, _ = _explained_case(client, alice, face_jpeg)
    url = f"/api/v1/cases/{case['id']}/explanations"
    boolean = client.post(url, json={"methods": ["saliency"], "target": True}, headers=alice.headers)
    assert boolean.status_code == 422, boolean.text
    figure = client.get(f"{url}/figure.png?methods=saliency,nope", headers=alice.headers)
    assert figure.status_code == 422 and figure.json()["code"] == "unknown_method"
    long_name = upload(client, alice, face_jpeg, pseudonym="p" * 121)
    assert long_name.status_code == 422 and long_name.json()["code"] == "invalid_request"
    control = upload(client, alice, face_jpeg, pseudonym="a\x07b")
    assert control.status_code == 422
    # a right-to-left override displays as other text than it holds (the name is shown to other clinicians)
    for bidi in ("\u202e", "\u2067", "\u202a"):
        spoof = upload(client, alice, face_jpeg, pseudonym=f"patient{bidi}fdp.exe")
        assert spoof.status_code == 422, bidi
    assert upload(client, alice, face_jpeg, pseudonym="\u05d3\u05e0\u05d4 \u200f7").status_code == 201  # RLM
    # full-width digits are not an OMIM id (stored, they would never match the model's syndrome)
    wide = client.put(f"/api/v1/cases/{case['id']}/diagnosis", headers=alice.headers,
                      json={"name": "x", "omim": "\uff16\uff11\uff12\uff13\uff14\uff15"})
    assert wide.status_code == 422 and wide.json()["code"] == "invalid_omim", wide.text
    with app.state.sessions() as session:
        assert len(session.scalars(select(Case)).all()) == 2  # the refused uploads stored nothing
    huge = client.get("/api/v1/cases", headers={**alice.headers, "X-Padding": "x" * (64 * 1024)})
    assert huge.status_code == 431 and huge.json()["code"] == "headers_too_large"
    hours = client.post(url, headers=alice.headers, json={
        "methods": ["integrated_gradients", "smoothgrad", "occlusion"],
        "params": {"integrated_gradients": {"steps": 1000}, "smoothgrad": {"samples": 500},
                   "occlusion": {"stride": 1}}})
    assert hours.status_code == 422 and hours.json()["code"] == "invalid_params"
    assert "passes" in hours.json()["detail"]


def test_one_user_cannot_queue_unbounded_jobs(settings: Settings, face_jpeg: bytes) -> None:
    application = create_app(settings.model_copy(update={"max_active_jobs": 2}))
    account = make_account(application, "alice", "clinician")
    with TestClient(application) as client:
        application.state.jobs.stop()  # nothing runs: the jobs stay queued
        case = upload(client, account, face_jpeg).json()
        url = f"/api/v1/cases/{case['id']}/explanations"
        for method in ("saliency", "gradcam"):
            assert client.post(url, json={"methods": [method]}, headers=account.headers).status_code == 202
        third = client.post(url, json={"methods": ["deeplift"]}, headers=account.headers)
        assert third.status_code == 429 and third.json()["code"] == "too_many_jobs"
        again = client.post(url, json={"methods": ["saliency"]}, headers=account.headers)  # already asked: no job
        assert again.status_code == 202
    application.state.engine.dispose()


# --- 12. minor: file modes, access logs ------------------------------------------------------------------


def test_the_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    from app.migrate import upgrade

    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{(data / 'gestaltlens.db').as_posix()}"
    upgrade(url)
    application = create_app(Settings(data_dir=data, database_url=url, secret_key="test-secret-key-that-is-long"))
    with TestClient(application) as client:
        client.get("/login")
        files = [p for p in data.iterdir() if p.name.startswith("gestaltlens.db")]
        assert {p.name for p in files} >= {"gestaltlens.db", "gestaltlens.db-wal"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))
    application.state.engine.dispose()


def test_access_log_lines_carry_no_query_string() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/v1/cases?q=Smith&diagnosis=OMIM:123456", "1.1", 200), None)
    assert DropQueryString().filter(record)
    line = record.getMessage()
    assert "Smith" not in line and "123456" not in line and "/api/v1/cases" in line


# --- 7. (unit half; the crash itself is in tests/test_faults.py) the start-up sweep keeps real cases ------


def test_the_start_up_sweep_removes_folders_without_a_row_and_keeps_cases(settings: Settings, face_jpeg: bytes) -> None:
    first = create_app(settings)
    account = make_account(first, "alice", "clinician")
    with TestClient(first) as client:
        case = upload(client, account, face_jpeg).json()
    first.state.engine.dispose()
    photos = settings.photo_dir
    orphan = photos / ("f" * 32)
    orphan.mkdir()
    (orphan / "photo.jpg").write_bytes(face_jpeg)
    young = settings.model_copy(update={"orphan_grace_s": 3600})
    for current, orphan_survives in ((young, True), (settings.model_copy(update={"orphan_grace_s": 0}), False)):
        application = create_app(current)
        with TestClient(application):
            pass
        application.state.engine.dispose()
        assert orphan.exists() is orphan_survives  # in flight elsewhere until the grace period has passed
        assert (photos / case["id"] / "photo.jpg").exists()

