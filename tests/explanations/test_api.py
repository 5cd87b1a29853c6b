"""Explanations through the HTTP contract: 202 + a job, polling, the results cache, the maps and figure,
access rules, bad requests, erasure, and the inline runner's recovery of interrupted jobs."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.explain.registry import DEFAULT_PANEL, METHODS
from app.explanations.models import Explanation
from app.jobs.models import Job
from app.synth.generate import generate_one
from app.web.factory import create_app
from tests.conftest import Account, browser_headers, login, upload

QUICK = ["saliency", "gradcam", "occlusion"]


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return generate_one(seed=777, class_id="syn_b", index=0, severity=1.0).jpeg


def wait_for(client: TestClient, account: Account, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=account.headers).json()
        assert 0.0 <= job["progress"] <= 1.0
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def test_default_panel_runs_and_every_map_is_served(client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    top = case["predictions"][0]["syndrome_id"]
    response = client.post(f"/api/v1/cases/{case['id']}/explanations", json={}, headers=alice.headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert [e["method"] for e in body["explanations"]] == list(DEFAULT_PANEL)
    assert {e["target"]["id"] for e in body["explanations"]} == {top}  # default target: the top-ranked syndrome
    assert all(e["status"] in ("queued", "running", "done") for e in body["explanations"])
    job = wait_for(client, alice, body["job_id"])
    assert job["state"] == "done", job
    assert job["progress"] == 1.0 and job["started_at"] and job["finished_at"]

    listed = client.get(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers).json()
    assert {e["method"] for e in listed} == set(DEFAULT_PANEL)
    for item in listed:
        assert item["status"] == "done", item
        assert item["model"].startswith("demo@")
        raw = client.get(item["urls"]["npy"], headers=alice.headers)
        assert raw.status_code == 200
        values = np.load(io.BytesIO(raw.content), allow_pickle=False)
        assert values.dtype == np.float32 and values.shape == (112, 112) and np.isfinite(values).all()
        assert np.abs(values).max() > 0, f"{item['method']} gave an all-zero map"
        if not METHODS[item["method"]].signed:
            assert values.min() >= 0
        assert item["stats"]["vmax"] > item["stats"]["vmin"]
        assert png_size(client.get(item["urls"]["png"], headers=alice.headers).content) == (112, 112)

    # Heat layers: on the crop 112x112, on the photo with the photo's aspect ratio.
    first = listed[0]["urls"]["png"]
    assert png_size(client.get(first + "?view=heat", headers=alice.headers).content) == (112, 112)
    width, height = png_size(client.get(first + "?view=heat&space=photo", headers=alice.headers).content)
    assert abs(width / height - case["photo"]["width"] / case["photo"]["height"]) < 0.02
    assert client.get(first + "?space=moon", headers=alice.headers).status_code == 422

    figure = client.get(f"/api/v1/cases/{case['id']}/explanations/figure.png", headers=alice.headers)
    assert figure.status_code == 200 and figure.headers["content-type"] == "image/png"
    fig_w, fig_h = png_size(figure.content)
    assert fig_w > 800 and fig_h > 300
    for kind in ("signed", "magnitude"):
        assert client.get(f"/api/v1/colorbars/{kind}.png", headers=alice.headers).status_code == 200


def test_the_same_request_is_computed_once(app, client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    url = f"/api/v1/cases/{case['id']}/explanations"
    first = client.post(url, json={"methods": QUICK}, headers=alice.headers).json()
    wait_for(client, alice, first["job_id"])
    again = client.post(url, json={"methods": QUICK}, headers=alice.headers)
    assert again.status_code == 202
    assert again.json()["job_id"] is None  # nothing to compute
    assert [e["id"] for e in again.json()["explanations"]] == [e["id"] for e in first["explanations"]]
    assert all(e["status"] == "done" for e in again.json()["explanations"])
    # Other parameters or another target are other maps.
    other = client.post(url, json={"methods": ["occlusion"], "params": {"occlusion": {"stride": 10}}},
                        headers=alice.headers).json()
    assert other["job_id"] and other["explanations"][0]["id"] not in {e["id"] for e in first["explanations"]}
    second_target = case["predictions"][1]["syndrome_id"]
    third = client.post(url, json={"methods": ["saliency"], "target": second_target}, headers=alice.headers).json()
    assert third["explanations"][0]["target"]["id"] == second_target
    wait_for(client, alice, other["job_id"])
    wait_for(client, alice, third["job_id"])
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Explanation)) == len(QUICK) + 2
        assert session.scalar(select(func.count()).select_from(Job)) == 3
    maps = {e["method"] + e["target"]["id"]: e for e in client.get(url, headers=alice.headers).json()}
    a = np.load(io.BytesIO(client.get(maps["saliency" + case["predictions"][0]["syndrome_id"]]["urls"]["npy"],
                                      headers=alice.headers).content))
    b = np.load(io.BytesIO(client.get(maps["saliency" + second_target]["urls"]["npy"], headers=alice.headers).content))
    assert not np.allclose(a, b), "another target must give another map"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"methods": ["saliency", "lime"]}, "unknown_method"),
        ({"methods": ["saliency"], "target": "no_such_syndrome"}, "unknown_target"),
        ({"methods": ["saliency"], "target": 99}, "unknown_target"),
        ({"methods": ["occlusion"], "params": {"occlusion": {"stride": 0}}}, "invalid_params"),
        ({"methods": ["occlusion"], "params": {"occlusion": {"colour": "red"}}}, "invalid_params"),
        ({"methods": ["saliency"], "params": {"occlusion": {"stride": 5}}}, "invalid_params"),
        ({"methods": "saliency"}, "invalid_request"),
        ({"methods": ["saliency"], "extra": 1}, "invalid_request"),
    ],
)
def test_bad_requests_are_refused_and_store_nothing(
    app, client: TestClient, alice: Account, face_jpeg: bytes, body: dict, code: str
) -> None:
    case = upload(client, alice, face_jpeg).json()
    response = client.post(f"/api/v1/cases/{case['id']}/explanations", json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert response.json()["detail"]
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Explanation)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_other_users_see_nothing(client: TestClient, alice: Account, bob: Account, admin: Account,
                                 face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    body = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                       headers=alice.headers).json()
    wait_for(client, alice, body["job_id"])
    explanation = body["explanations"][0]["id"]
    for path in (f"/api/v1/jobs/{body['job_id']}", f"/api/v1/cases/{case['id']}/explanations",
                 f"/api/v1/explanations/{explanation}/map.npy", f"/api/v1/explanations/{explanation}/map.png",
                 f"/api/v1/cases/{case['id']}/explanations/figure.png"):
        assert client.get(path, headers=bob.headers).status_code == 404, path
        assert client.get(path, headers=admin.headers).status_code == 200, path
        assert client.get(path).status_code == 401, path
    response = client.post(f"/api/v1/cases/{case['id']}/explanations", json={}, headers=bob.headers)
    assert response.status_code == 404


def test_a_map_that_is_not_ready_answers_409(app, client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    with app.state.sessions() as session:
        row = Explanation(case_id=case["id"], model_id="demo", model_version="0", method="saliency",
                          target_id="syn_a", target_index=1, target_name="x", params={}, params_key="k")
        session.add(row)
        session.commit()
        row_id = row.id
    response = client.get(f"/api/v1/explanations/{row_id}/map.npy", headers=alice.headers)
    assert response.status_code == 409 and response.json()["code"] == "not_ready"


def test_erasing_a_case_erases_its_maps(app, client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    body = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": QUICK},
                       headers=alice.headers).json()
    wait_for(client, alice, body["job_id"])
    maps_dir = Path(app.state.photo_store.case_dir(case["id"])) / "maps"
    assert len(list(maps_dir.glob("*.npy"))) == len(QUICK)
    assert client.delete(f"/api/v1/cases/{case['id']}", headers=alice.headers).status_code == 204
    assert not maps_dir.exists()
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Explanation)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert client.get(f"/api/v1/jobs/{body['job_id']}", headers=alice.headers).status_code == 404


def test_inline_runner_requeues_interrupted_jobs_at_start_up(settings, face_jpeg: bytes) -> None:
    """A job left 'running' by a crashed process runs again at the next start; one that kept crashing fails."""
    from tests.conftest import make_account

    first = create_app(settings)
    alice = make_account(first, "alice", "clinician")
    with TestClient(first) as client:
        case = upload(client, alice, face_jpeg).json()
        first.state.jobs.stop()  # the worker thread is gone: jobs now stay queued, as after a crash
        body = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                           headers=alice.headers).json()
        hopeless = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["gradcam"]},
                               headers=alice.headers).json()
    from datetime import timedelta

    from app.db import utcnow
    from app.jobs.service import lease

    silent = utcnow() - lease() - timedelta(seconds=1)  # the crash was longer ago than a lease
    with first.state.sessions() as session:  # as the crash left them: running
        for job_id, attempts in ((body["job_id"], 1), (hopeless["job_id"], 3)):
            job = session.get(Job, job_id)
            job.state, job.attempts, job.updated_at = "running", attempts, silent
        session.commit()
    first.state.engine.dispose()

    second = create_app(settings)
    try:
        with TestClient(second) as client:
            assert wait_for(client, alice, body["job_id"])["state"] == "done"
            failed = client.get(f"/api/v1/jobs/{hopeless['job_id']}", headers=alice.headers).json()
            assert failed["state"] == "failed" and "interrupted" in failed["error"]
            listed = {e["method"]: e for e in client.get(f"/api/v1/cases/{case['id']}/explanations",
                                                         headers=alice.headers).json()}
            assert listed["saliency"]["status"] == "done"
            # The failed job's map failed with it: no card polls a dead job forever.
            assert listed["gradcam"]["status"] == "failed" and "interrupted" in listed["gradcam"]["error"]
            # The hopeless job's map is asked for again: it is not stuck behind the failed job.
            retry = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["gradcam"]},
                                headers=alice.headers).json()
            assert retry["job_id"] not in (None, hopeless["job_id"])
            assert wait_for(client, alice, retry["job_id"])["state"] == "done"
    finally:
        second.state.engine.dispose()


def test_case_page_panel_and_form(client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    token = login(client, alice)
    page = client.get(f"/cases/{case['id']}")
    assert f'hx-get="/cases/{case["id"]}/explanations/panel"' in page.text
    panel = client.get(f"/cases/{case['id']}/explanations/panel")
    assert panel.status_code == 200
    for info in METHODS.values():
        assert info.label in panel.text
    response = client.post(f"/cases/{case['id']}/explanations",
                           data={"methods": ["saliency", "gradcam"], "target": case["predictions"][0]["syndrome_id"]},
                           headers=browser_headers(token))
    assert response.status_code == 200, response.text
    assert 'id="explain-grid"' in response.text
    assert response.text.count('class="map-card') == 2
    job_id = client.get(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers).json()[0]["job_id"]
    wait_for(client, alice, job_id)
    grid = client.get(f"/cases/{case['id']}/explanations/grid")
    assert grid.text.count("state-done") == 2 and "Download figure" in grid.text

    # A later job of one method: when it ends, the page refreshes the grid's head for that job's methods, so the
    # figure it offers holds the maps on screen, not every map ever computed for the target
    target = case["predictions"][0]["syndrome_id"]
    client.post(f"/cases/{case['id']}/explanations", data={"methods": ["deconvolution"], "target": target},
                headers=browser_headers(token))
    job_id = client.get(f"/api/v1/cases/{case['id']}/explanations",
                        headers=alice.headers).json()[0]["job_id"]
    wait_for(client, alice, job_id)
    done = client.get(f"/jobs/{job_id}/progress").text
    refresh = re.search(r'hx-get="([^"]+)"', done).group(1).replace("&amp;", "&")
    assert "methods=deconvolution" in refresh and 'hx-select=".grid-head"' in done
    head = client.get(refresh).text
    assert head.count('class="map-card') == 1
    figure = re.search(r'href="([^"]+figure\.png[^"]+)"', head).group(1).replace("&amp;", "&")
    assert "methods=deconvolution" in figure and "saliency" not in figure
    assert client.get(f"/cases/{case['id']}/explanations/grid").text.count('class="map-card') == 3


def test_the_case_owner_can_follow_a_job_someone_else_started(client: TestClient, alice: Account, bob: Account,
                                                              admin: Account, face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    body = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                       headers=admin.headers).json()
    assert client.get(f"/api/v1/jobs/{body['job_id']}", headers=alice.headers).status_code == 200
    assert client.get(f"/api/v1/jobs/{body['job_id']}", headers=bob.headers).status_code == 404
    wait_for(client, admin, body["job_id"])


def test_a_stale_job_is_not_waited_on_forever(app, client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    """A job whose broker message was lost stays queued; after the stale limit, asking again makes a new job."""
    from datetime import timedelta

    from app.db import utcnow
    from app.jobs.service import STALE_AFTER

    case = upload(client, alice, face_jpeg).json()
    app.state.jobs.stop()  # nothing runs: the job stays queued, like one whose message was lost
    url = f"/api/v1/cases/{case['id']}/explanations"
    lost = client.post(url, json={"methods": ["saliency"]}, headers=alice.headers).json()
    assert client.post(url, json={"methods": ["saliency"]}, headers=alice.headers).json()["job_id"] == lost["job_id"]
    with app.state.sessions() as session:
        session.get(Job, lost["job_id"]).updated_at = utcnow() - STALE_AFTER - timedelta(seconds=1)
        session.commit()
    again = client.post(url, json={"methods": ["saliency"]}, headers=alice.headers).json()
    assert again["job_id"] not in (None, lost["job_id"])
    assert again["explanations"][0]["id"] == lost["explanations"][0]["id"]  # the same map row, a new job


def test_an_unreachable_broker_fails_the_job_and_says_so(settings, face_jpeg: bytes) -> None:
    from tests.conftest import make_account

    broken = settings.model_copy(update={"job_runner": "celery", "broker_url": "redis://127.0.0.1:9/0"})
    application = create_app(broken)
    alice = make_account(application, "alice", "clinician")
    try:
        with TestClient(application) as client:
            case = upload(client, alice, face_jpeg).json()
            response = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                                   headers=alice.headers)
            assert response.status_code == 503 and response.json()["code"] == "queue_unavailable"
            listed = client.get(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers).json()
            assert listed[0]["status"] == "failed" and "unreachable" in listed[0]["error"]
            job = client.get(f"/api/v1/jobs/{listed[0]['job_id']}", headers=alice.headers).json()
            assert job["state"] == "failed"
    finally:
        application.state.engine.dispose()
