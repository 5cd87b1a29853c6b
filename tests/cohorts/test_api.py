"""Cohorts through the HTTP contract: the privacy floor (4 patients refused, 5 accepted, two photos of one
patient count once), a composite and syndrome-wise maps computed as a job from stored and fresh maps,
cross-user isolation; the demo cohort import; the ``gestaltlens cohort`` folder command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cases.models import Case
from app.cli import cli
from app.cohorts.demo import import_demo_cohort
from app.explanations.models import Explanation
from app.synth.generate import generate_one
from tests.conftest import Account, upload
from tests.explanations.test_api import wait_for

SYNDROME = "syn_d"
METHODS = ["gradcam", "similarity_decomposition"]


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    return [generate_one(seed=515, class_id=SYNDROME, index=i).jpeg for i in range(6)]


def _case(client: TestClient, account: Account, jpeg: bytes, pseudonym: str) -> dict:
    case = upload(client, account, jpeg, pseudonym=pseudonym).json()
    response = client.put(f"/api/v1/cases/{case['id']}/diagnosis", json={"syndrome_id": SYNDROME},
                          headers=account.headers)
    assert response.status_code == 200, response.text
    return case


def _ask(client: TestClient, account: Account, **body: object):
    return client.post(f"/api/v1/syndromes/{SYNDROME}/cohort", json={"methods": METHODS, **body},
                       headers=account.headers)


def test_the_floor_counts_patients_and_a_cohort_is_computed_and_isolated(
        client: TestClient, alice: Account, bob: Account, admin: Account, faces: list[bytes]) -> None:
    for i in range(4):
        _case(client, alice, faces[i], f"P{i}")
    refused = _ask(client, alice)
    assert refused.status_code == 422
    body = refused.json()
    assert body["code"] == "too_few_cases" and body["floor"] == 5 and body["count"] == 4
    assert "5" in body["detail"] and "4" in body["detail"]
    _case(client, alice, faces[4], "p0 ")  # the same patient as P0 (pseudonyms compare trimmed, case-blind)
    again = _ask(client, alice)
    assert again.status_code == 422 and again.json()["count"] == 4
    listed = {s["syndrome_id"]: s for s in client.get("/api/v1/syndromes", headers=alice.headers).json()}
    assert listed[SYNDROME]["n_cases"] == 5 and listed[SYNDROME]["n_patients"] == 4
    assert not listed[SYNDROME]["passes_floor"]
    with client.app.state.sessions() as session:  # nothing was computed or stored below the floor
        assert session.scalar(select(func.count()).select_from(Explanation)) == 0

    _case(client, alice, faces[5], "P5")
    accepted = _ask(client, alice)
    assert accepted.status_code == 202, accepted.text
    out = accepted.json()
    assert out["cohort"]["n_patients"] == 5 and out["cohort"]["n_cases"] == 6 and out["job_id"]
    assert wait_for(client, alice, out["job_id"], timeout=240)["state"] == "done"
    done = client.get(f"/api/v1/syndromes/{SYNDROME}/cohort", headers=alice.headers,
                      params={"methods": ",".join(METHODS)}).json()["result"]
    assert done["status"] == "done" and done["n_cases"] == 6
    assert done["result"]["maps_computed"] == 12 and done["result"]["maps_reused"] == 0
    sharp = done["result"]["sharpness"]
    assert sharp["registered"] > sharp["plain"]  # registration must beat the blurry plain mean
    composite = client.get(done["urls"]["composite"], headers=alice.headers)
    assert composite.status_code == 200 and composite.headers["cache-control"] == "no-store"
    for method in METHODS:
        for kind in ("mean", "agreement", "composite"):
            png = client.get(done["urls"]["maps"][method][kind], headers=alice.headers)
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        raw = client.get(done["urls"]["maps"][method]["npy"], headers=alice.headers)
        mean = np.load(io.BytesIO(raw.content), allow_pickle=False)
        assert mean.shape == (112, 112) and np.abs(mean).max() > 0 and np.abs(mean).max() <= 1.0
        agreement = np.load(io.BytesIO(client.get(f"/api/v1/cohorts/{done['id']}/maps/{method}.npy",
                                                  params={"kind": "agreement"}, headers=alice.headers).content))
        assert agreement.min() >= 0 and agreement.max() <= 1 and agreement.mean() > 0.5

    # asking again returns the stored result; the per-case maps are ordinary explanation rows
    repeat = _ask(client, alice).json()
    assert repeat["result"]["id"] == done["id"] and repeat["job_id"] is None
    case_id = client.get("/api/v1/cases", headers=alice.headers).json()["items"][0]["id"]
    maps = client.get(f"/api/v1/cases/{case_id}/explanations", headers=alice.headers).json()
    assert sorted(m["method"] for m in maps) == sorted(METHODS) and all(m["objective"] == "logit" for m in maps)

    # bob sees none of alice's cases: below the floor for him, and alice's result is not his
    assert _ask(client, bob).json()["code"] == "too_few_cases"
    assert client.get(done["urls"]["composite"], headers=bob.headers).status_code == 404
    assert client.get(f"/api/v1/cohorts/{done['id']}/maps/gradcam.npy", headers=bob.headers).status_code == 404
    # an admin sees the same cases but gets no one else's stored result
    missing = client.get(f"/api/v1/syndromes/{SYNDROME}/cohort", headers=admin.headers,
                         params={"methods": ",".join(METHODS)})
    assert missing.status_code == 404
    assert client.get(done["urls"]["composite"], headers=admin.headers).status_code == 404

    # erasing one patient's case removes every composite it went into: the rows and, at once (not on the next
    # cohort request), the derived group data on disk (composite.npy, plain.npy, each method's .npy maps)
    folder = client.app.state.settings.data_dir / "cohorts" / done["id"]
    assert {"composite.npy", "plain.npy"} <= {p.name for p in folder.iterdir()}
    assert any(p.name.endswith(".mean.npy") for p in folder.iterdir())
    assert client.delete(f"/api/v1/cases/{case_id}", headers=alice.headers).status_code == 204
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())
    assert client.get(done["urls"]["composite"], headers=alice.headers).status_code == 404


def test_a_cohort_reuses_exact_maps_only_and_batches_its_cases(client: TestClient, alice: Account,
                                                                 faces: list[bytes]) -> None:
    """A fast-mode map of a member case is not an exact map: the cohort computes its own (issue 15)."""
    cases = [_case(client, alice, faces[i], f"Q{i}") for i in range(5)]
    url = f"/api/v1/cases/{cases[0]['id']}/explanations"
    asked = client.post(url, json={"methods": ["integrated_gradients"], "mode": "fast"}, headers=alice.headers)
    assert asked.status_code == 202, asked.text
    assert wait_for(client, alice, asked.json()["job_id"])["state"] == "done"
    accepted = client.post(f"/api/v1/syndromes/{SYNDROME}/cohort", json={"methods": ["integrated_gradients"]},
                           headers=alice.headers)
    assert accepted.status_code == 202, accepted.text
    assert wait_for(client, alice, accepted.json()["job_id"], timeout=240)["state"] == "done"
    done = client.get(f"/api/v1/syndromes/{SYNDROME}/cohort", headers=alice.headers,
                      params={"methods": "integrated_gradients"}).json()["result"]
    assert done["result"]["maps_computed"] == 5 and done["result"]["maps_reused"] == 0
    listed = client.get(url, headers=alice.headers).json()
    assert sorted(e["mode"] for e in listed) == ["exact", "fast"]
    # the five exact maps were computed in shared batches; the exact map is not the fast one, but agrees with it
    exact = {e["mode"]: e for e in listed}["exact"]
    fast = {e["mode"]: e for e in listed}["fast"]
    a, b = (np.load(io.BytesIO(client.get(f"/api/v1/explanations/{e['id']}/map.npy", headers=alice.headers).content),
                    allow_pickle=False) for e in (exact, fast))
    assert not np.array_equal(a, b) and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_demo_cohort_import_is_marked_synthetic_and_idempotent(client: TestClient, alice: Account) -> None:
    app = client.app
    model = app.state.models.get()
    with app.state.sessions() as session:
        from app.auth.models import User

        owner = session.scalar(select(User).where(User.username == alice.username))
        kwargs = {"owner": owner, "store": app.state.photo_store, "model": model, "syndromes": ["syn_a", "syn_e"]}
        summary = import_demo_cohort(session, per_syndrome=2, **kwargs)
        assert summary.created == 4 and summary.skipped == 0 and summary.per_syndrome == {"syn_a": 2, "syn_e": 2}
        again = import_demo_cohort(session, per_syndrome=2, **kwargs)
        assert again.created == 0 and again.skipped == 4
        cases = list(session.scalars(select(Case).where(Case.owner_id == owner.id)))
    assert len(cases) == 4
    for case in cases:
        assert case.pseudonym.startswith("SYNTHETIC ") and case.diagnosis_syndrome_id in case.pseudonym
    listed = {s["syndrome_id"]: s["n_cases"] for s in client.get("/api/v1/syndromes", headers=alice.headers).json()}
    assert listed["syn_a"] == 2 and listed["syn_b"] == 0 and listed["unaffected"] == 0


def test_cohort_command_on_a_label_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "faces"
    for label, count in (("syn_a", 5), ("syn_b", 2)):
        (folder / label).mkdir(parents=True)
        for i in range(count):
            (folder / label / f"{i}.jpg").write_bytes(generate_one(seed=61, class_id=label, index=i).jpeg)
    (folder / "syn_b" / "not-a-face.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["cohort", str(folder), "--out", str(out), "--methods", "gradcam"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["syn_a"]["status"] == "done" and summary["labels"]["syn_a"]["n"] == 5
    assert "below the floor" in summary["labels"]["syn_b"]["status"]
    assert any("not-a-face" in line for line in summary["skipped"])
    assert not (out / "syn_b").exists()
    for name in ("composite.png", "plain.png", "gradcam.png"):
        assert (out / "syn_a" / name).read_bytes()[:4] == b"\x89PNG"
    mean = np.load(out / "syn_a" / "gradcam.mean.npy")
    assert mean.shape == (112, 112) and mean.dtype == np.float32
    refused = CliRunner().invoke(cli, ["cohort", str(folder), "--out", str(out), "--objective", "nonsense"])
    assert refused.exit_code != 0
