"""Large fixation files run as a ``gaze_import`` job (issue 20.12): 202 with a poll URL, progress to 1, the
import readable from the job; a bad file fails its job readably and leaves no rows and no stored upload; an
erased case cancels a pending import that names it and removes its stored file. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.gaze import import_jobs, importer, synthetic
from app.gaze.models import Fixation, GazeImport
from app.jobs import service as job_service
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from tests.conftest import Account
from tests.explanations.test_api import wait_for
from tests.gaze.test_import import PEOPLE, _cases

pytestmark = pytest.mark.postgres

def _setup(app, client: TestClient, admin: Account, faces: list[bytes]) -> list[synthetic.SynthCase]:
    """The cases of tests/gaze/test_import.py, and its participants."""
    cases = _cases(app, client, admin, faces)
    for code, group in PEOPLE:
        assert client.post("/api/v1/gaze/participants", headers=admin.headers,
                           json={"code": code, "group": group}).status_code == 201
    return cases


def _post(client: TestClient, admin: Account, data: bytes, name: str = "big.csv", **form: str):
    return client.post("/api/v1/gaze/imports", headers=admin.headers, files={"file": (name, data, "text/plain")},
                       data=form)


def _counts(app) -> tuple[int, int]:
    with app.state.sessions() as session:
        return (session.scalar(select(func.count()).select_from(Fixation)),
                session.scalar(select(func.count()).select_from(GazeImport)))


def _uploads(app) -> list[Path]:
    folder = Path(app.state.settings.data_dir) / import_jobs.UPLOAD_DIR
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_large_import_answers_202_and_lands_whole_with_progress(app, client: TestClient, admin: Account,
                                                                   faces: list[bytes],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _setup(app, client, admin, faces)
    reported: list[float] = []
    writer = job_service.progress_writer

    def recording_writer(*args, **kwargs):  # type: ignore[no-untyped-def]
        write = writer(*args, **kwargs)

        def record(fraction: float) -> None:
            reported.append(fraction)
            write(fraction)

        return record

    monkeypatch.setattr(job_service, "progress_writer", recording_writer)
    drawn = synthetic.draw(cases, PEOPLE, per_case=2_600, seed=5)  # 20,800 rows: over the default threshold
    data = synthetic.generic_csv(drawn)
    assert data.count(b"\n") > import_jobs.JOB_LINES
    response = _post(client, admin, data)
    assert response.status_code == 202, response.text[:500]
    body = response.json()
    assert response.headers["location"] == body["poll"] == f"/api/v1/gaze/imports/jobs/{body['job_id']}"
    assert response.headers["cache-control"].startswith("private, no-store")
    job = wait_for(client, admin, body["job_id"])
    assert job["state"] == "done" and job["progress"] == 1.0 and job["error"] is None, job
    # progress through every step, and on PostgreSQL (where another connection may write while the rows land)
    # after each chunk of rows as well
    assert reported == sorted(reported) and reported[0] > 0 and reported[-1] == 1.0
    chunks = -(-len(drawn) // importer.CHUNK)
    assert len(reported) == 4 + (chunks if app.state.engine.dialect.name != "sqlite" else 0)
    view = client.get(body["poll"], headers=admin.headers).json()
    assert view["job"]["state"] == "done" and view["job"]["progress"] == 1.0 and view["code"] is None
    landed = view["import"]
    assert landed["fixations"] == len(drawn) == 20_800 and landed["filename"] == "big.csv"
    assert landed["report"]["format"] == "generic" and landed["report"]["cases"] == 2
    assert _counts(app) == (len(drawn), 1)
    assert _uploads(app) == [], "the stored upload outlived its job"
    fragment = client.get(f"/gaze/imports/jobs/{body['job_id']}", headers={**admin.headers, "HX-Request": "true"})
    assert fragment.status_code == 200 and "Imported 20800 fixations from big.csv." in fragment.text
    assert "hx-get" not in fragment.text  # finished: the fragment stops polling
    with app.state.sessions() as session:  # coordinates as the in-request import maps them
        first = session.scalars(select(Fixation).order_by(Fixation.id).limit(3)).all()
        for row, fix in zip(first, drawn, strict=False):
            assert row.photo_x == pytest.approx(fix.x, abs=0.01) and row.photo_y == pytest.approx(fix.y, abs=0.01)
            assert row.seq >= 1
    # the same file again is refused at once (the request's check), nothing stored
    again = _post(client, admin, data, name="again.csv")
    assert again.status_code == 409 and again.json()["code"] == "duplicate_import"
    assert _uploads(app) == [] and _counts(app) == (len(drawn), 1)
    page = client.get("/gaze", headers=admin.headers)
    assert page.status_code == 200 and "big.csv" in page.text and "Imports in progress" not in page.text
    # small files still import inside the request (201)
    small = synthetic.generic_csv(synthetic.draw(cases, PEOPLE[:1], per_case=3, seed=9))
    assert _post(client, admin, small, name="small.csv").status_code == 201


def test_a_bad_large_file_fails_its_job_readably_and_leaves_nothing(app, client: TestClient, admin: Account,
                                                                   faces: list[bytes],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _setup(app, client, admin, faces[:1])
    monkeypatch.setattr(import_jobs, "JOB_LINES", 50)  # "large" without writing 20,000 lines per case
    good = synthetic.generic_csv(synthetic.draw(cases, PEOPLE, per_case=20, seed=2)).decode()
    assert len(good.splitlines()) > 50
    # refused by the request's cheap look: a 4xx with its code, no job, nothing stored
    response = _post(client, admin, ("hello,world\n" + "1,2\n" * 60).encode())
    assert response.status_code == 422 and response.json()["code"] == "unknown_format"
    response = _post(client, admin, good.encode(), space="screen")  # screen pixels without the rectangle
    assert response.status_code == 422 and response.json()["code"] == "missing_option"
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.kind == import_jobs.KIND)) == 0
    assert _uploads(app) == []
    # refused by the job's full check: an unknown case on the last line (starting it sweeps an old orphan upload)
    orphan = Path(app.state.settings.data_dir) / import_jobs.UPLOAD_DIR / "left-by-a-crash.upload"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"participant,case,x,y,duration_ms\n")
    os.utime(orphan, (time.time() - 2 * import_jobs.ORPHAN_GRACE_S,) * 2)
    bad = good + "CG01,NOPE,10,10,200\n"
    response = _post(client, admin, bad.encode())
    assert response.status_code == 202, response.text
    job = wait_for(client, admin, response.json()["job_id"])
    assert job["state"] == "failed" and "unknown case(s): NOPE" in job["error"] and "Nothing imported" in job["error"]
    view = client.get(response.json()["poll"], headers=admin.headers).json()
    assert view["code"] == "import_refused" and view["report"]["unknown_cases"] == ["NOPE"] and view["import"] is None
    # an impossible value deep in the file, through the page: the progress fragment, then the refusal
    impossible = good + "CG01,GZ1,10,10,1e308\n"
    page = client.post("/gaze/imports", headers={**admin.headers, "HX-Request": "true"},
                       files={"file": ("worse.csv", impossible.encode(), "text/plain")})
    assert page.status_code == 202 and 'id="import-report"' in page.text and "<progress" in page.text
    job_id = page.text.split('data-job="', 1)[1].split('"', 1)[0]
    assert f'hx-get="/gaze/imports/jobs/{job_id}"' in page.text
    assert wait_for(client, admin, job_id)["state"] == "failed"
    fragment = client.get(f"/gaze/imports/jobs/{job_id}", headers={**admin.headers, "HX-Request": "true"})
    assert fragment.status_code == 200 and "impossible values" in fragment.text and "hx-get" not in fragment.text
    assert "impossible_values" in fragment.text
    assert _counts(app) == (0, 0), "a failed import left rows behind"
    assert _uploads(app) == [], "a failed import left its upload behind"


def test_erasing_a_case_cancels_a_pending_import_and_removes_its_file(app, client: TestClient, admin: Account,
                                                                      faces: list[bytes],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _setup(app, client, admin, faces)
    monkeypatch.setattr(import_jobs, "JOB_LINES", 50)
    both = synthetic.generic_csv(synthetic.draw(cases, PEOPLE, per_case=20, seed=3))
    second_only = synthetic.generic_csv(synthetic.draw(cases[1:], PEOPLE, per_case=20, seed=4))
    app.state.jobs.stop()  # nothing runs: the imports stay queued
    first = _post(client, admin, both, name="both.csv").json()
    second = _post(client, admin, second_only, name="second.csv").json()
    assert len(_uploads(app)) == 2
    page = client.get("/gaze", headers=admin.headers)  # the page shows the waiting imports, polling
    assert "Imports in progress" in page.text and "Queued" in page.text and "<progress" in page.text
    assert f'hx-get="/gaze/imports/jobs/{first["job_id"]}"' in page.text
    with app.state.sessions() as session:  # as a worker elsewhere would report it
        running = session.get(Job, first["job_id"])
        running.state, running.progress, running.worker = RUNNING, 0.42, "elsewhere:1"
        session.commit()
    fragment = client.get(f"/gaze/imports/jobs/{first['job_id']}", headers={**admin.headers, "HX-Request": "true"})
    assert "Importing… 42 %" in fragment.text and '<progress max="1" value="0.42"' in fragment.text
    assert f'hx-get="/gaze/imports/jobs/{first["job_id"]}"' in fragment.text  # still polling

    assert client.delete(f"/api/v1/cases/{cases[0].id}", headers=admin.headers).status_code == 204
    with app.state.sessions() as session:
        cancelled, waiting = session.get(Job, first["job_id"]), session.get(Job, second["job_id"])
        assert cancelled.state == FAILED and cancelled.error == import_jobs.CANCELLED
        assert waiting.state == QUEUED  # names only the other case
        assert _uploads(app) == [import_jobs.upload_path(app.state.settings.data_dir, waiting.payload)]
    view = client.get(first["poll"], headers=admin.headers).json()
    assert view["job"]["state"] == "failed" and "erased" in view["job"]["error"]

    app.state.jobs.start()  # the remaining import runs; the cancelled one never does
    assert wait_for(client, admin, second["job_id"])["state"] == "done"
    assert _counts(app) == (20 * len(PEOPLE), 1) and _uploads(app) == []


def test_an_import_cancelled_while_it_runs_does_not_land(app, client: TestClient, admin: Account,
                                                         faces: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """The landing transaction writes only while the job is still running and held: a cancellation (an erasure)
    between the check and the landing rolls the rows back."""
    cases = _setup(app, client, admin, faces[:1])
    monkeypatch.setattr(import_jobs, "JOB_LINES", 50)
    data = synthetic.generic_csv(synthetic.draw(cases, PEOPLE, per_case=20, seed=6))
    prepare = importer.prepare

    def cancelled_meanwhile(checked: importer.CheckedFile) -> importer.PreparedRows:
        with app.state.sessions() as session:  # what an erasure's purge does to the job row
            job = session.scalars(select(Job).where(Job.kind == import_jobs.KIND)).one()
            job.state, job.error = FAILED, import_jobs.CANCELLED
            session.commit()
        return prepare(checked)

    monkeypatch.setattr(importer, "prepare", cancelled_meanwhile)
    response = _post(client, admin, data)
    assert response.status_code == 202
    job = wait_for(client, admin, response.json()["job_id"])
    assert job["state"] == "failed" and job["error"] == import_jobs.CANCELLED
    deadline = time.monotonic() + 60  # the job was failed from outside: wait for its handler to give up
    while _uploads(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _uploads(app) == [] and _counts(app) == (0, 0)
