"""The demo cohort's job: asking again returns the live job, never a dead one (DESIGN.md "Jobs")."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.auth.models import User
from app.db import utcnow
from app.demo.worker import KIND
from app.jobs import service as job_service
from app.jobs.models import Job
from tests.conftest import Account, browser_headers, login


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
