"""Attention studies through HTTP on the shared study framework: creation, members only, one viewing per
case turned into pseudo-fixations (window dwell and bubble clicks), progress and resume, closing, exports,
and the two study kinds kept apart."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth.models import User
from app.gaze import pointer
from app.studies.models import RatingStudy
from app.studies.order import draw_order
from app.synth.generate import generate_one
from tests.conftest import Account, upload

pytestmark = pytest.mark.postgres


def test_pointer_dwell_and_clicks_become_pseudo_fixations() -> None:
    # 0.5 s still at (100, 100), a jump, 0.3 s still at (300, 120), then a too-short stop
    samples = [(t, 100.0 + (t % 100) / 100, 100.0) for t in range(0, 500, 50)]
    samples += [(t, 300.0, 120.0) for t in range(500, 800, 50)] + [(800.0, 500.0, 500.0), (850.0, 700.0, 10.0)]
    found = pointer.dwell_fixations(samples, dispersion=10, min_ms=100, end_ms=900)
    assert [(round(f.x), round(f.y), f.onset_ms, f.duration_ms) for f in found] == [(100, 100, 0, 500),
                                                                                   (300, 120, 500, 300)]
    clicks = pointer.click_fixations([(1000.0, 5.0, 6.0), (200.0, 1.0, 2.0)], end_ms=3000)
    assert [(f.x, f.onset_ms, f.duration_ms) for f in clicks] == [(1.0, 200.0, 800.0), (5.0, 1000.0, 2000.0)]


def test_attention_study_through_the_api(app, client: TestClient, admin: Account, alice: Account,
                                         bob: Account) -> None:
    faces = [generate_one(seed=515 + i, class_id="syn_b", index=0, severity=1.0).jpeg for i in range(2)]
    cases = [upload(client, admin, face, pseudonym=f"AT{i}").json() for i, face in enumerate(faces)]
    body = {"name": "Where do you look", "cases": [c["id"] for c in cases], "participants": ["alice"],
            "group": "non_clinician", "viewer": "window", "seconds": 3}
    created = client.post("/api/v1/attention-studies", headers=admin.headers, json=body)
    assert created.status_code == 201, created.text
    study = created.json()
    assert study["kind"] == "attention" and study["cases"] == 2 and study["participants"] == 1
    sid = study["id"]
    bad = client.post("/api/v1/attention-studies", headers=admin.headers, json={**body, "viewer": "x"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_viewer"
    assert client.post("/api/v1/attention-studies", headers=alice.headers, json=body).status_code == 403

    # members only; the rating-study endpoints do not know it
    assert client.get(f"/api/v1/attention-studies/{sid}", headers=bob.headers).status_code == 404
    assert client.get(f"/api/v1/studies/{sid}", headers=admin.headers).status_code == 404
    assert client.get(f"/api/v1/attention-studies/{sid}/cases/1/photo", headers=bob.headers).status_code == 404
    photo = client.get(f"/api/v1/attention-studies/{sid}/cases/1/photo", headers=alice.headers)
    assert photo.status_code == 200 and photo.headers["cache-control"] == "private, no-store"
    mine = client.get(f"/api/v1/attention-studies/{sid}", headers=alice.headers).json()
    assert mine["progress"] == {"rated": 0, "total": 2, "pending": 0, "complete": False}
    first = mine["resume_position"]  # the first photo of alice's own order
    second = 3 - first
    assert first in (1, 2) and "orders" not in mine  # orders are stored with the study, not shown
    with app.state.sessions() as session:
        row = session.get(RatingStudy, sid)
        member = session.scalar(select(User.id).where(User.username == "alice"))
        stored = row.settings["orders"][str(member)]
        assert stored[0] == first and stored == draw_order([1, 2], seed=row.seed, rater_id=member, case_id="cases")

    dwell = [[t, 200.0, 220.0] for t in range(0, 1500, 50)] + [[t, 400.0, 300.0] for t in range(1500, 3000, 50)]
    saved = client.post(f"/api/v1/attention-studies/{sid}/cases/{first}/viewing", headers=alice.headers,
                        json={"samples": dwell})
    assert saved.status_code == 201, saved.text
    assert saved.json()["fixations"] == 2 and saved.json()["next_url"].endswith(f"/attention/{sid}/cases/{second}")
    again = client.post(f"/api/v1/attention-studies/{sid}/cases/{first}/viewing", headers=alice.headers,
                        json={"samples": dwell})
    assert again.status_code == 409 and again.json()["code"] == "already_viewed"
    assert client.post(f"/api/v1/attention-studies/{sid}/cases/2/viewing", headers=bob.headers,
                       json={"samples": dwell}).status_code == 404
    resumed = client.get(f"/api/v1/attention-studies/{sid}", headers=alice.headers).json()
    assert resumed["progress"]["rated"] == 1 and resumed["resume_position"] == second

    # the export waits for the study to close (members); admins see it at once
    assert client.get(f"/api/v1/attention-studies/{sid}/fixations.csv", headers=alice.headers).status_code == 403
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/attention-studies/{sid}/fixations.csv",
                                                      headers=admin.headers).text)))
    assert len(rows) == 2 and {r["format"] for r in rows} == {"browser-window"}
    assert rows[0]["group"] == "non_clinician" and rows[0]["participant"].startswith("B")
    assert "alice" not in client.get(f"/api/v1/attention-studies/{sid}/fixations.csv", headers=admin.headers).text
    assert float(rows[0]["duration_ms"]) == 1500 and float(rows[0]["photo_x"]) == 200
    results = client.get(f"/api/v1/gaze/results?study={sid}", headers=admin.headers).json()
    assert results["fixations"] == 2 and results["groups"] == ["non_clinician"]

    closed = client.post(f"/api/v1/attention-studies/{sid}/close", headers=admin.headers)
    assert closed.status_code == 200 and closed.json()["closed"]
    late = client.post(f"/api/v1/attention-studies/{sid}/cases/{second}/viewing", headers=alice.headers, json={})
    assert late.status_code == 409 and late.json()["code"] == "study_closed"
    assert client.get(f"/api/v1/attention-studies/{sid}/fixations.csv", headers=alice.headers).status_code == 200
    # a case in a study cannot be erased
    assert client.delete(f"/api/v1/cases/{cases[0]['id']}", headers=admin.headers).status_code == 409

    # bubbles: each click is a pseudo-fixation lasting until the next click (or the end of the viewing)
    bubbles = client.post("/api/v1/attention-studies", headers=admin.headers, json={
        **body, "viewer": "bubbles", "participants": ["bob"], "group": "other_clinician"}).json()["id"]
    clicked = client.post(f"/api/v1/attention-studies/{bubbles}/cases/2/viewing", headers=bob.headers,
                          json={"clicks": [[400, 100, 120], [1900, 150, 90], [99999, 1, 1]]})
    assert clicked.status_code == 201 and clicked.json()["fixations"] == 2  # the late click is past the time
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/attention-studies/{bubbles}/fixations.csv",
                                                      headers=admin.headers).text)))
    assert [(float(r["duration_ms"]), r["format"], r["group"]) for r in rows] == [
        (1500.0, "browser-bubbles", "other_clinician"), (1100.0, "browser-bubbles", "other_clinician")]
    assert client.get(f"/api/v1/attention-studies/{bubbles}", headers=bob.headers).json()["resume_position"] == 1
