"""Ranking with the served model: stored with the case at upload, re-runnable, flagged when stale, and the
GestaltMatcher-service endpoints (`POST /predict`, `GET /status`) answering in that service's shape."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cases.models import Case
from app.nets.registry import load_model
from app.predictions.models import PredictionRun
from app.settings import PROJECT_ROOT, Settings
from app.synth.generate import generate_one
from app.web.factory import create_app
from tests.conftest import Account, encode, login, upload

DEMO = load_model(PROJECT_ROOT / "models", "demo")


@pytest.fixture(scope="module")
def syndrome_photo() -> tuple[str, bytes]:
    """A generated face of the first synthetic syndrome (not unaffected), as a JPEG file."""
    label = DEMO.labels[1].id
    face = generate_one(seed=4242, class_id=label, index=0, severity=1.0)  # a clear case, not a borderline one
    return label, face.jpeg


def test_upload_stores_a_ranking_with_model_and_version(
    app, client: TestClient, alice: Account, syndrome_photo: tuple[str, bytes]
) -> None:
    label, photo = syndrome_photo
    case = upload(client, alice, photo).json()
    predictions = case["predictions"]
    assert len(predictions) == min(10, len(DEMO.labels))
    assert [p["rank"] for p in predictions] == list(range(1, len(predictions) + 1))
    assert {"rank", "syndrome_id", "name", "score"} <= set(predictions[0])
    assert case["prediction"]["model_id"] == "demo" and case["prediction"]["current"] is True
    if DEMO.gallery is not None:
        assert case["prediction"]["ranked_by"] == "gallery"
        distances = [p["distance"] for p in predictions]
        assert distances == sorted(distances)
    assert predictions[0]["syndrome_id"] == label
    with app.state.sessions() as session:
        run = session.scalar(select(PredictionRun).where(PredictionRun.case_id == case["id"]))
        assert run.model_version == DEMO.card.version


def test_rerun_adds_a_run_and_marks_old_model_rankings_stale(
    app, client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    case = upload(client, alice, astronaut_jpeg).json()
    with app.state.sessions() as session:  # pretend the ranking came from an older model version
        run = session.scalar(select(PredictionRun).where(PredictionRun.case_id == case["id"]))
        run.model_version = "0.0.1-old"
        session.commit()
    stale = client.get(case["urls"]["self"], headers=alice.headers).json()
    assert stale["prediction"]["current"] is False
    rerun = client.post(f"/api/v1/cases/{case['id']}/predictions", headers=alice.headers)
    assert rerun.status_code == 201
    assert rerun.json()["prediction"]["current"] is True
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).where(PredictionRun.case_id == case["id"])) == 2
    fresh = client.get(case["urls"]["self"], headers=alice.headers).json()
    assert fresh["prediction"]["current"] is True


def test_rerun_respects_case_access(client: TestClient, alice: Account, bob: Account, astronaut_jpeg: bytes) -> None:
    case = upload(client, alice, astronaut_jpeg).json()
    assert client.post(f"/api/v1/cases/{case['id']}/predictions", headers=bob.headers).status_code == 404


def test_case_page_shows_the_ranked_list_and_rerun_button(
    client: TestClient, alice: Account, syndrome_photo: tuple[str, bytes]
) -> None:
    case = upload(client, alice, syndrome_photo[1]).json()
    login(client, alice)
    page = client.get(case["urls"]["page"]).text
    assert "Syndrome ranking" in page and "Re-run ranking" in page
    assert case["predictions"][0]["name"] in page


def test_gm_predict_answers_in_the_gestaltmatcher_shape_and_stores_nothing(
    app, client: TestClient, alice: Account, syndrome_photo: tuple[str, bytes]
) -> None:
    label, photo = syndrome_photo
    body = {"img": base64.b64encode(photo).decode()}
    bearer = client.post("/predict", json=body, headers=alice.headers)
    assert bearer.status_code == 200, bearer.text
    data = bearer.json()
    assert {"model_version", "gallery_version", "suggested_syndromes_list", "suggested_genes_list"} <= set(data)
    first = data["suggested_syndromes_list"][0]
    assert set(first) == {"syndrome_name", "omim_id", "distance", "gestalt_score", "image_id", "subject_id"}
    assert first["syndrome_name"] == next(lab.name for lab in DEMO.labels if lab.id == label)
    assert len(data["suggested_syndromes_list"]) == len(DEMO.labels)
    basic = base64.b64encode(f"{alice.username}:{alice.password}".encode()).decode()
    assert client.post("/predict", json=body, headers={"Authorization": f"Basic {basic}"}).status_code == 200
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 0


def test_gm_predict_errors_carry_a_message(client: TestClient, alice: Account) -> None:
    unauthenticated = client.post("/predict", json={"img": ""})
    assert unauthenticated.status_code == 401 and "message" in unauthenticated.json()
    assert unauthenticated.headers["www-authenticate"].startswith("Basic")
    bad = client.post("/predict", json={"img": "not base64!!"}, headers=alice.headers)
    assert bad.status_code == 400 and bad.json()["message"]
    blank = encode(np.full((300, 300, 3), 180, np.uint8), "PNG")
    no_face = client.post("/predict", json={"img": base64.b64encode(blank).decode()}, headers=alice.headers)
    # The service's own answer for a photo it cannot align: status 200 and its exact message.
    assert no_face.status_code == 200 and no_face.json()["code"] == "no_face"
    assert no_face.json()["message"] == "Face alignment error."
    wrong_password = base64.b64encode(b"alice:nope").decode()
    refused = client.post("/predict", json={"img": ""}, headers={"Authorization": f"Basic {wrong_password}"})
    assert refused.status_code == 401


def test_status_is_public_and_names_the_model(client: TestClient) -> None:
    status = client.get("/status").json()
    assert status["status"] == "running" and status["model_version"] == DEMO.card.version


def test_a_missing_model_does_not_stop_intake(migrated_url: str, tmp_path: Path, astronaut_jpeg: bytes) -> None:
    settings = Settings(data_dir=tmp_path / "d", database_url=migrated_url, secret_key="k" * 40,
                        models_dir=tmp_path / "no-models")
    app = create_app(settings)
    from tests.conftest import make_account

    account = make_account(app, "carol", "clinician")
    with TestClient(app) as client:
        case = upload(client, account, astronaut_jpeg)
        assert case.status_code == 201 and case.json()["predictions"] == []
        assert client.get("/status").json()["status"] == "degraded"
        rerun = client.post(f"/api/v1/cases/{case.json()['id']}/predictions", headers=account.headers)
        assert rerun.status_code == 503 and "cannot be loaded" in rerun.json()["detail"]
        status = client.get("/status").json()  # public: the reason without the server's paths
        assert "cannot be loaded" in status["message"] and str(tmp_path) not in status["message"]
        assert str(tmp_path) not in rerun.json()["detail"]
        assert str(tmp_path / "no-models") in app.state.models.reason  # the full reason is the operator's
    app.state.engine.dispose()
