"""Issue 20's defects (hardening round three), one test each; each failed on main before its fix. Fault
injection with real processes for items 2 and 4 is in tests/test_faults.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.cases.models import Case
from app.ratings.models import Rating, RatingStudy
from app.synth.generate import generate_one
from tests.conftest import Account, upload
from tests.test_explanations_api import wait_for


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return generate_one(seed=777, class_id="syn_b", index=0, severity=1.0).jpeg


# --- 7. control characters are refused (422), never removed or replaced --------------------------------------


def test_control_characters_are_refused_not_changed(app, client: TestClient, admin: Account, alice: Account,
                                                    face_jpeg: bytes) -> None:
    c1 = "\u0085"
    for pseudonym in (f"P{c1}07", "P\x0007", "P\x9f07"):
        refused = upload(client, alice, face_jpeg, pseudonym=pseudonym)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_request", refused.text
    case = upload(client, alice, face_jpeg, pseudonym="P07").json()
    for name in ("Noonan\x00 syndrome", f"Noonan{c1}syndrome", "Noonan\tsyndrome", "Noonan\nsyndrome"):
        response = client.put(f"/api/v1/cases/{case['id']}/diagnosis", json={"name": name, "omim": "163950"},
                              headers=alice.headers)
        assert response.status_code == 422 and response.json()["code"] == "invalid_request", (name, response.text)
    assert client.get(f"/api/v1/cases/{case['id']}/diagnosis", headers=alice.headers).json() is None
    admin_case = upload(client, admin, face_jpeg).json()
    for name in ("Pi\x00lot", f"Pi{c1}lot", "Pi\nlot"):
        study = client.post("/api/v1/studies", headers=admin.headers, json={
            "name": name, "cases": [admin_case["id"]], "methods": ["saliency"], "raters": [], "blinded": False})
        assert study.status_code == 422 and study.json()["code"] == "invalid_request", (name, study.text)
    body = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                       headers=alice.headers).json()
    assert wait_for(client, alice, body["job_id"])["state"] == "done"
    explanation = body["explanations"][0]["id"]
    for comment in ("bad\x00comment", f"bad{c1}comment", "bad\x1bcomment"):
        rating = client.post(f"/api/v1/explanations/{explanation}/ratings", headers=alice.headers,
                             json={"score": 3, "regions": [], "comment": comment})
        assert rating.status_code == 422 and rating.json()["code"] == "invalid_request", (comment, rating.text)
    kept = client.post(f"/api/v1/explanations/{explanation}/ratings", headers=alice.headers,
                       json={"score": 3, "regions": [], "comment": "line one\r\nline\ttwo"})
    assert kept.status_code == 201, kept.text
    with app.state.sessions() as session:
        assert [r.comment for r in session.scalars(select(Rating))] == ["line one\r\nline\ttwo"]
        assert session.scalar(select(RatingStudy)) is None
        assert [c.pseudonym for c in session.scalars(select(Case).where(Case.owner_id != None))  # noqa: E711
                if c.pseudonym] == ["P07"]
