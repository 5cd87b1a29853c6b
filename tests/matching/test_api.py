"""Confirmed cases join matching (issue 22), on SQLite and PostgreSQL with the real demo model: a shared
confirmed case matches a new photo of the same generated patient, even for a syndrome the model does not
know; an unshared or erased one never does; another user's case is only ever "a confirmed case at this
site"; sharing is audited; matches pair unsolved cases under the measured threshold."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.matching.models import CaseEmbedding
from app.synth.generate import generate_one
from tests.conftest import Account, upload

RARE = {"name": "Ultra-rare face syndrome", "omim": "OMIM:612345"}


@pytest.fixture(scope="module")
def patient() -> tuple[bytes, bytes, bytes]:
    """Two photos of one generated patient (features drawn at two severities) and one of someone else."""
    first = generate_one(seed=2201, class_id="syn_d", index=4, severity=1.0).jpeg
    again = generate_one(seed=2201, class_id="syn_d", index=4, severity=0.8).jpeg
    other = generate_one(seed=2202, class_id="syn_g", index=1).jpeg
    return first, again, other


def _case(client: TestClient, account: Account, photo: bytes) -> dict:
    response = upload(client, account, photo)
    assert response.status_code == 201, response.text
    return response.json()


def _case_rows(client: TestClient, account: Account, case_id: str) -> list[dict]:
    response = client.post(f"/api/v1/cases/{case_id}/predictions", headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()["predictions"]


def _embeddings(app, case_id: str) -> int:
    with app.state.sessions() as session:
        return session.scalar(select(func.count()).select_from(CaseEmbedding).where(CaseEmbedding.case_id == case_id))


def test_a_shared_confirmed_case_matches_the_same_patient_and_stops_when_unshared_or_erased(
    app, client: TestClient, alice: Account, bob: Account, patient: tuple[bytes, bytes, bytes]
) -> None:
    first, again, _ = patient
    known = _case(client, alice, first)
    assert _embeddings(app, known["id"]) == 1  # every ranked case keeps its embedding per model version
    # sharing needs a confirmed diagnosis
    refused = client.put(f"/api/v1/cases/{known['id']}/sharing", headers=alice.headers)
    assert refused.status_code == 422 and refused.json()["code"] == "not_confirmed"
    confirmed = client.put(f"/api/v1/cases/{known['id']}/diagnosis", json=RARE, headers=alice.headers)
    assert confirmed.status_code == 200, confirmed.text
    assert client.put(f"/api/v1/cases/{known['id']}/sharing", headers=alice.headers).json() == {"shared": True}

    new = _case(client, bob, again)  # bob's new photo of the same patient
    rows = new["predictions"]
    rare = [r for r in rows if r["name"] == RARE["name"]]
    assert len(rare) == 1, rows  # a syndrome the model does not know still ranks, from the confirmed case
    assert rare[0]["source"] == "case" and rare[0]["rank"] == 1 and rare[0]["score"] is None
    assert rare[0]["syndrome_id"] == "OMIM:612345" and rare[0]["image_id"] is None
    assert all(r["source"] == "gallery" for r in rows if r is not rare[0] and "distance" in r)
    # bob's similar patients: alice's case only as "a confirmed case at this site"
    similar = client.get(f"/api/v1/cases/{new['id']}/similar", headers=bob.headers)
    assert similar.status_code == 200 and similar.headers["cache-control"] == "no-store"
    items = similar.json()["items"]
    assert items[0]["anonymous"] and items[0]["diagnosis"] == RARE["name"] and items[0]["case_id"] is None
    assert known["id"] not in similar.text and known["id"] not in str(rows)
    panel = client.get(f"/cases/{new['id']}/similar", headers=bob.headers)
    assert "a confirmed case at this site" in panel.text and known["id"] not in panel.text

    # revoked: never matches again
    assert client.delete(f"/api/v1/cases/{known['id']}/sharing", headers=alice.headers).json() == {"shared": False}
    assert not [r for r in _case_rows(client, bob, new["id"]) if r.get("source") == "case"]
    assert not [s for s in client.get(f"/api/v1/cases/{new['id']}/similar", headers=bob.headers).json()["items"]]
    # shared again, then erased: its embeddings go with it at once
    client.put(f"/api/v1/cases/{known['id']}/sharing", headers=alice.headers)
    assert [r for r in _case_rows(client, bob, new["id"]) if r.get("source") == "case"]
    assert client.delete(f"/api/v1/cases/{known['id']}", headers=alice.headers).status_code == 204
    assert _embeddings(app, known["id"]) == 0
    assert not [r for r in _case_rows(client, bob, new["id"]) if r.get("source") == "case"]
    with app.state.sessions() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.case_id == known["id"])
                                      .where(AuditEvent.action.in_(["share_for_matching", "unshare_for_matching"]))))
    assert [e.action for e in events].count("share_for_matching") == 2 and len(events) == 3
    assert all(not e.detail or ("omim" not in e.detail and "diagnosis" not in e.detail) for e in events)


def test_own_cases_are_named_and_unsolved_pairs_match(
    client: TestClient, alice: Account, bob: Account, patient: tuple[bytes, bytes, bytes]
) -> None:
    first, again, other = patient
    a, b, c = _case(client, alice, first), _case(client, alice, again), _case(client, alice, other)
    own = client.get(f"/api/v1/cases/{a['id']}/similar", headers=alice.headers).json()["items"]
    assert [s["case_id"] for s in own][:1] == [b["id"]] and not own[0]["anonymous"]
    assert own[0]["compare_url"] == f"/cases/{a['id']}/compare?reference=case:{b['id']}"
    matches = client.get("/api/v1/matches", headers=alice.headers).json()
    threshold = matches["threshold"]
    assert threshold["source"] == "measured" and 0 < threshold["false_match_rate"] <= 0.06
    pairs = {frozenset((m["case_a"], m["case_b"])) for m in matches["items"]}
    assert frozenset((a["id"], b["id"])) in pairs
    assert all(m["distance"] < threshold["threshold"] for m in matches["items"])
    # bob sees none of alice's cases, neither by matching nor by similarity
    bobs = client.get("/api/v1/matches", headers=bob.headers)
    assert bobs.json()["items"] == [] and a["id"] not in bobs.text
    assert client.get(f"/api/v1/cases/{a['id']}/similar", headers=bob.headers).status_code == 404
    # a confirmed case leaves the unsolved pairs
    client.put(f"/api/v1/cases/{b['id']}/diagnosis", json=RARE, headers=alice.headers)
    after = client.get("/api/v1/matches", headers=alice.headers).json()["items"]
    assert frozenset((a["id"], b["id"])) not in {frozenset((m["case_a"], m["case_b"])) for m in after}
    page = client.get("/matches", headers=alice.headers)
    assert page.status_code == 200 and "false-match rate" in page.text and c["id"] is not None
    plot = client.get("/matching/threshold.png", headers=alice.headers)
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_the_admin_gallery_page_and_re_encoding(app, client: TestClient, admin: Account, alice: Account,
                                                patient: tuple[bytes, bytes, bytes]) -> None:
    page = client.get("/admin/gallery", headers=admin.headers)
    assert page.status_code == 200 and "syn_a" in page.text and "In the classifier" in page.text
    assert "Every case is encoded" in page.text
    assert client.get("/admin/gallery", headers=alice.headers).status_code == 403
    case = _case(client, alice, patient[0])
    with app.state.sessions() as session:  # as if the case had been ranked by an older model version
        session.query(CaseEmbedding).filter(CaseEmbedding.case_id == case["id"]).update(
            {CaseEmbedding.model_version: "0.0.1"})
        session.commit()
    assert "1 case(s) have no embedding" in client.get("/admin/gallery", headers=admin.headers).text
    assert client.post("/api/v1/matching/encode", headers=alice.headers).status_code == 403
    job = client.post("/api/v1/matching/encode", headers=admin.headers)
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 120
    while client.get(f"/api/v1/jobs/{job.json()['job_id']}", headers=admin.headers).json()["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert _embeddings(app, case["id"]) == 2  # the old version's row stays; the served one is back
    assert "Every case is encoded" in client.get("/admin/gallery", headers=admin.headers).text
