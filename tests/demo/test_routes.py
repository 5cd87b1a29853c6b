"""The demo cohort's job: asking again returns the live job, never a dead one (DESIGN.md "Jobs")."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.auth.models import User
from app.db import utcnow
from app.demo.worker import KIND
from app.jobs import service as job_service
from app.jobs.models import Job
from app.web.factory import create_app
from tests.conftest import Account, browser_headers, login, make_account


def _job_id(text: str) -> str:
    return re.search(r'hx-get="/demo-cohort/([0-9a-f]{32})"', text).group(1)


def test_a_demo_job_whose_worker_died_is_replaced_not_returned(
    app, client: TestClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.demo.routes as demo_routes

    monkeypatch.setattr(demo_routes, "PER_SYNDROME", 1)  # one face keeps the new job short
    monkeypatch.setattr(demo_routes, "SYNDROMES", ["syn_a"])
    with app.state.sessions() as session:  # a job some worker claimed, with a fresh heartbeat
        owner = session.scalar(select(User.id).where(User.username == alice.username))
        job = Job(kind=KIND, payload={"per_syndrome": 1, "syndromes": ["syn_a"]}, owner_id=owner,
                  # its last allowed attempt: a late take-over by this app's runner fails it instead of running it
                  state="running", attempts=job_service.MAX_ATTEMPTS, worker="gone-host:4242", started_at=utcnow())
        session.add(job)
        session.commit()
        held = job.id
    token = login(client, alice)
    again = client.post("/demo-cohort", headers=browser_headers(token))
    assert again.status_code == 200 and _job_id(again.text) == held  # alive: the same job, not a second one

    with app.state.sessions() as session:  # its worker dies: no heartbeat for longer than the lease
        session.execute(update(Job).where(Job.id == held)
                        .values(updated_at=utcnow() - job_service.lease() - timedelta(seconds=5)))
        session.commit()
    started = client.post("/demo-cohort", headers=browser_headers(token))
    assert started.status_code == 200
    fresh = _job_id(started.text)
    assert fresh != held
    deadline = time.monotonic() + 120
    while True:  # the new job runs to the end (and the dead one is never handed out meanwhile)
        progress = client.get(f"/demo-cohort/{fresh}", headers={"HX-Request": "true"})
        if "HX-Redirect" in progress.headers or "could not be loaded" in progress.text:
            break
        assert time.monotonic() < deadline, progress.text
        time.sleep(0.5)
    assert progress.headers.get("HX-Redirect") == "/cases", progress.text
    assert client.get("/api/v1/cases", headers=alice.headers).json()["total"] == 1


def test_an_unreachable_broker_fails_the_demo_job_and_says_so(settings) -> None:  # type: ignore[no-untyped-def]
    """The demo route hands its job over like every other route (app.web.jobs.submit_or_fail): a broker that is
    down answers 503 ``queue_unavailable`` and fails the job at once, so asking again never returns it."""
    broken = settings.model_copy(update={"job_runner": "celery", "broker_url": "redis://127.0.0.1:9/0"})
    application = create_app(broken)
    alice = make_account(application, "alice", "clinician")
    try:
        with TestClient(application) as client:
            token = login(client, alice)
            as_script = {"X-CSRF-Token": token, "Origin": "http://testserver"}  # the cookie, no htmx: a JSON error
            refused = client.post("/demo-cohort", headers=as_script)
            assert refused.status_code == 503 and refused.json()["code"] == "queue_unavailable", refused.text
            with application.state.sessions() as session:
                jobs = session.scalars(select(Job).where(Job.kind == KIND)).all()
                assert [(j.state, "unreachable" in (j.error or "")) for j in jobs] == [("failed", True)]
            again = client.post("/demo-cohort", headers=as_script)
            assert again.status_code == 503
            with application.state.sessions() as session:  # a second job, not the failed one handed out again
                assert session.scalar(select(func.count()).select_from(Job).where(Job.kind == KIND)) == 2
    finally:
        application.state.engine.dispose()


def test_asking_again_while_the_broker_is_down_leaves_the_live_job_alone(settings) -> None:  # type: ignore[no-untyped-def]
    """A second click used to hand the live job to the runner again: with the broker down that failed the job a
    worker was still running (its result then dropped), and the next click started a second demo cohort."""
    broken = settings.model_copy(update={"job_runner": "celery", "broker_url": "redis://127.0.0.1:9/0"})
    application = create_app(broken)
    alice = make_account(application, "alice", "clinician")
    try:
        with application.state.sessions() as session:  # claimed by a worker elsewhere, heartbeat fresh
            owner = session.scalar(select(User.id).where(User.username == alice.username))
            job = Job(kind=KIND, payload={"per_syndrome": 1, "syndromes": ["syn_a"]}, owner_id=owner,
                      state="running", attempts=1, worker="other-host:4242", started_at=utcnow())
            session.add(job)
            session.commit()
            live = job.id
        with TestClient(application) as client:
            token = login(client, alice)
            again = client.post("/demo-cohort", headers=browser_headers(token))
            assert again.status_code == 200, again.text
            assert _job_id(again.text) == live
        with application.state.sessions() as session:
            assert session.get(Job, live).state == "running"
            assert session.scalar(select(func.count()).select_from(Job).where(Job.kind == KIND)) == 1
    finally:
        application.state.engine.dispose()


def test_a_refreshed_case_list_shows_the_demo_cohort_still_loading(app, client: TestClient, alice: Account,
                                                                   bob: Account) -> None:
    """The progress lived only in the button's answer: after F5 the list (already holding the first demo cases)
    showed no sign that more were coming."""
    token = login(client, alice)
    assert 'hx-get="/demo-cohort/current"' in client.get("/cases").text
    idle = client.get("/demo-cohort/current", headers={"HX-Request": "true"})
    assert idle.status_code == 200 and idle.text == ""
    with app.state.sessions() as session:  # claimed by a worker, heartbeat fresh
        owner = session.scalar(select(User.id).where(User.username == alice.username))
        job = Job(kind=KIND, payload={"per_syndrome": 1, "syndromes": ["syn_a"]}, owner_id=owner,
                  state="running", attempts=1, worker="other-host:4242", started_at=utcnow(), progress=0.4)
        session.add(job)
        session.commit()
        live = job.id
    shown = client.get("/demo-cohort/current", headers={"HX-Request": "true"})
    assert _job_id(shown.text) == live and "<progress" in shown.text and "40%" in shown.text
    assert 'id="demo-live-progress"' in shown.text  # not the empty list's offer's id: ids stay unique
    polled = client.get(f"/demo-cohort/{live}", headers={"HX-Request": "true", "HX-Target": "demo-live-progress"})
    assert 'id="demo-live-progress"' in polled.text
    client.post("/logout", headers=browser_headers(token))
    login(client, bob)  # another clinician's job is not theirs to follow
    assert client.get("/demo-cohort/current", headers={"HX-Request": "true"}).text == ""
