"""Fixation imports through HTTP, on files in every format written by the synthetic generator: counts,
coordinates mapped by each case's alignment, reports for broken files with nothing imported, duplicates,
and the results (JSON, CSV, page) once maps exist."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cases.models import Case
from app.gaze import results_cache, synthetic
from app.gaze.models import Fixation, GazeImport
from tests.conftest import Account, upload
from tests.explanations.test_api import wait_for

pytestmark = pytest.mark.postgres

PEOPLE = [("CG01", "clinical_geneticist"), ("CG02", "clinical_geneticist"), ("NC01", "non_clinician"),
          ("NC02", "non_clinician")]


def _cases(app, client: TestClient, admin: Account, faces: list[bytes]) -> list[synthetic.SynthCase]:
    ids = []
    for i, face in enumerate(faces):
        response = upload(client, admin, face, pseudonym=f"GZ{i + 1}")
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    with app.state.sessions() as session:
        rows = [session.get(Case, case_id) for case_id in ids]
        return [synthetic.SynthCase(c.id, c.pseudonym, c.photo_width, c.photo_height, c.align_matrix) for c in rows]


def _import(client: TestClient, admin: Account, name: str, data: bytes, **form: str):
    return client.post("/api/v1/gaze/imports", headers=admin.headers, files={"file": (name, data, "text/plain")},
                       data=form)


def _count(app) -> tuple[int, int]:
    with app.state.sessions() as session:
        return (session.scalar(select(func.count()).select_from(Fixation)),
                session.scalar(select(func.count()).select_from(GazeImport)))


def _register(client: TestClient, admin: Account) -> None:
    for code, group in PEOPLE:
        response = client.post("/api/v1/gaze/participants", headers=admin.headers,
                               json={"code": code, "group": group, "experience_years": 5})
        assert response.status_code == 201, response.text


def test_every_format_imports_and_maps_onto_the_aligned_face(app, client: TestClient, admin: Account,
                                                              faces: list[bytes]) -> None:
    cases = _cases(app, client, admin, faces)
    _register(client, admin)
    files = synthetic.write_all(cases, PEOPLE, per_case=10, seed=3)
    drawn = synthetic.draw(cases, PEOPLE, per_case=10, seed=3)  # what the generic CSV holds

    generic = _import(client, admin, "gaze_generic.csv", files["gaze_generic.csv"])
    assert generic.status_code == 201, generic.text
    assert generic.json()["fixations"] == len(drawn) == 80
    tobii = _import(client, admin, "export.tsv", files["tobii_pro_lab_export.tsv"])
    assert tobii.status_code == 201, tobii.text
    report = tobii.json()["report"]
    assert report["format"] == "tobii" and report["fixations"] == 80
    assert report["skipped"]["same_fixation"] > 80 and report["skipped"]["not_a_fixation"] == 80  # samples, saccades
    rect = ",".join(f"{v:.3f}" for v in cases[0].rect())
    eyelink = _import(client, admin, "report.txt", files["eyelink_fixation_report.txt"], rect=rect)
    assert eyelink.status_code == 201, eyelink.text
    pupil_name = f"pupil/CG01/{cases[1].id}/fixations_on_surface_photo.csv"
    pupil = _import(client, admin, "fixations_on_surface_photo.csv", files[pupil_name], participant="CG01",
                    case=cases[1].name)
    assert pupil.status_code == 201, pupil.text
    assert pupil.json()["fixations"] == 10 and pupil.json()["report"]["skipped"]["same_fixation"] > 0

    # Coordinates: photo pixels as written, and aligned ones by the case's alignment matrix (the generator
    # drew them in aligned space around landmarks and mapped them to the photo by the inverse).
    with app.state.sessions() as session:
        rows = list(session.scalars(select(Fixation).where(Fixation.import_id == generic.json()["id"])
                                    .order_by(Fixation.id)))
        assert len(rows) == len(drawn)
        for row, fix in zip(rows, drawn, strict=True):
            assert row.photo_x == pytest.approx(fix.x, abs=0.01) and row.photo_y == pytest.approx(fix.y, abs=0.01)
            m = np.asarray(fix.case.align_matrix)
            ax, ay = m @ np.array([fix.x, fix.y, 1.0])
            assert row.aligned_x == pytest.approx(ax, abs=0.01) and row.aligned_y == pytest.approx(ay, abs=0.01)
        # the Tobii file has screen pixels (rounded to whole pixels) in a scaled rectangle: same places, within
        # the rounding (half a screen pixel in x and y, carried through the display and alignment scales)
        tobii_rows = list(session.scalars(select(Fixation).where(Fixation.import_id == tobii.json()["id"])
                                          .order_by(Fixation.id)))
        expected = synthetic.draw(cases, PEOPLE, per_case=10, seed=4)
        errors = [abs(r.aligned_x - np.asarray(f.case.align_matrix)[0] @ [f.x, f.y, 1]) for r, f in
                  zip(tobii_rows, expected, strict=True)]
        from app.evaluate.gaze_maps import matrix_scale

        bound = max(0.5 * 2**0.5 * c.photo_width / round(c.rect()[2]) * matrix_scale(c.align_matrix) for c in cases)
        assert max(errors) <= bound + 1e-6 and bound < 1.5
        assert {r.participant.code for r in tobii_rows} == {c for c, _ in PEOPLE}

    listed = client.get("/api/v1/gaze/participants", headers=admin.headers).json()["items"]
    in_eyelink = files["eyelink_fixation_report.txt"].decode().count("\nCG01\t")  # cases shown like the first
    assert in_eyelink in (10, 20)
    assert {p["code"]: p["fixations"] for p in listed}["CG01"] == 20 + 20 + in_eyelink + 10

    # Results: two maps per case, every metric per group, the ceiling; the CSV carries every number.
    for case in cases:
        job = client.post(f"/api/v1/cases/{case.id}/explanations", headers=admin.headers,
                          json={"methods": ["saliency", "gradcam"]}).json()["job_id"]
        assert wait_for(client, admin, job)["state"] == "done"
    result = client.get("/api/v1/gaze/results", headers=admin.headers).json()
    assert set(result["methods"]) == {"saliency", "gradcam"}
    assert result["groups"] == ["clinical_geneticist", "non_clinician"]
    block = result["methods"]["gradcam"]["groups"]["clinical_geneticist"]
    assert block["cases"] == 2 and block["metrics"]["nss"]["n"] == 2
    ceiling = result["ceiling"]["clinical_geneticist"]["metrics"]
    assert ceiling["auc_judd"]["mean"] > 0.5  # other participants predict one well above chance
    exported = list(csv.DictReader(io.StringIO(client.get("/api/v1/gaze/results.csv",
                                                          headers=admin.headers).text)))
    pooled = {(r["kind"], r["subject"], r["group"], r["metric"]): r for r in exported if r["scope"] == "pooled"}
    assert float(pooled[("method", "gradcam", "clinical_geneticist", "nss")]["value"]) == pytest.approx(
        block["metrics"]["nss"]["mean"])
    assert len([r for r in exported if r["scope"] == "case"]) == len(result["per_case"]) * 8
    # the CSV reused the numbers the JSON computed (same data, same selection); a new map is seen at once
    before = results_cache.stats()
    assert client.get("/api/v1/gaze/results", headers=admin.headers).json() == result
    assert results_cache.stats()["hits"] > before["hits"] and results_cache.stats()["computed"] == before["computed"]
    job = client.post(f"/api/v1/cases/{cases[0].id}/explanations", headers=admin.headers,
                      json={"methods": ["input_x_gradient"]}).json()["job_id"]
    assert wait_for(client, admin, job)["state"] == "done"
    newer = client.get("/api/v1/gaze/results", headers=admin.headers).json()
    assert set(newer["methods"]) == {"saliency", "gradcam", "input_x_gradient"}
    assert newer["methods"]["input_x_gradient"]["groups"]["all"]["cases"] == 1
    # a fast-mode map is an approximation: the research comparison does not mix it in
    job = client.post(f"/api/v1/cases/{cases[0].id}/explanations", headers=admin.headers,
                      json={"methods": ["integrated_gradients"], "mode": "fast",
                            "params": {"integrated_gradients": {"steps": 8}}}).json()["job_id"]
    assert wait_for(client, admin, job)["state"] == "done"
    assert set(client.get("/api/v1/gaze/results", headers=admin.headers).json()["methods"]) == set(newer["methods"])
    fixations = client.get("/api/v1/gaze/fixations.csv", headers=admin.headers)
    assert fixations.headers["cache-control"].startswith("private, no-store")
    assert len(fixations.text.strip().splitlines()) == 1 + _count(app)[0]
    page = client.get("/gaze", headers=admin.headers)
    assert page.status_code == 200 and page.text.count("<svg class=\"gaze-plot\"") == 8
    case_page = client.get(f"/gaze/cases/{cases[0].id}", headers=admin.headers)
    assert case_page.status_code == 200 and case_page.text.count("<circle class=\"fixation\"") == 10 * 4 * 3
    assert case_page.text.count("/density.png") == 3  # everyone and each group, beside the methods' maps
    density = client.get(f"/api/v1/gaze/cases/{cases[0].id}/density.png?group=non_clinician", headers=admin.headers)
    assert density.status_code == 200 and density.content[:4] == b"\x89PNG"
    assert density.headers["cache-control"] == "private, no-store"
    assert client.get(f"/api/v1/gaze/cases/{cases[0].id}/density.png?participant=NOBODY",
                      headers=admin.headers).status_code == 404
    # erasing a case takes its gaze numbers out of the results (and out of the cache) at once
    assert client.get("/api/v1/gaze/results", headers=admin.headers).json()["cases"] == 2
    assert client.delete(f"/api/v1/cases/{cases[1].id}", headers=admin.headers).status_code == 204
    after = client.get("/api/v1/gaze/results", headers=admin.headers).json()
    assert after["cases"] == 1 and {row["case"] for row in after["per_case"]} == {cases[0].id}


def test_broken_files_import_nothing_and_say_why(app, client: TestClient, admin: Account, alice: Account,
                                                  faces: list[bytes]) -> None:
    cases = _cases(app, client, admin, faces[:1])
    _register(client, admin)
    good = synthetic.generic_csv(synthetic.draw(cases, PEOPLE[:2], per_case=5, seed=1)).decode()
    before = _count(app)

    def refused(data: str, status: int, code: str, **form: str) -> dict:
        response = _import(client, admin, "x.csv", data.encode(), **form)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["code"] == code and "detail" in body
        assert _count(app) == before, "a refused import left rows behind"
        return body

    refused("hello,world\n1,2\n", 422, "unknown_format")
    refused("participant,case,x,y\nCG01,GZ1,1,2\n", 422, "unknown_format")  # no duration column
    refused(good.replace("GZ1", "NOPE"), 422, "import_refused")
    body = refused(good.replace("CG02", "XX99"), 422, "import_refused")
    assert body["report"]["unknown_participants"] == ["XX99"]
    refused(good.replace("CG02", "Jane Doe"), 422, "import_refused", group="non_clinician")  # a name is no code
    refused(good, 422, "missing_option", space="screen")  # screen pixels without the rectangle
    refused("\t".join(["RECORDING_SESSION_LABEL", "CURRENT_FIX_X", "CURRENT_FIX_Y", "CURRENT_FIX_DURATION",
                       "image"]) + "\nCG01\t1\t2\t100\tGZ1\n", 422, "missing_option")  # EyeLink without rectangle
    refused("fixation_id,duration,norm_pos_x,norm_pos_y,on_surf\n1,200,0.5,0.5,True\n", 422, "missing_option")
    tobii = "\t".join(["Participant name", "Presented Stimulus name", "Eye movement type", "Fixation point X",
                       "Fixation point Y"]) + "\nCG01\tcase-GZ1.png\tFixation\t10\t10\n"
    assert "eye movement type index" in refused(tobii, 422, "unknown_columns")["detail"]
    eyelink = "\t".join(["RECORDING_SESSION_LABEL", "CURRENT_FIX_X", "CURRENT_FIX_Y", "CURRENT_FIX_DURATION",
                         "picture"]) + "\nCG01\t1\t2\t100\tGZ1\n"
    refused(eyelink, 422, "unknown_columns", rect="0,0,100,100")  # the image column is not "image"
    assert _import(client, admin, "r.txt", eyelink.encode(), rect="0,0,100,100",
                   stimulus_column="picture").status_code == 201
    before = _count(app)
    far = "participant,case,x,y,duration_ms\nCG01,GZ1,-50,10,200\nCG01,GZ1,99999,10,200\n"
    assert refused(far, 422, "import_refused")["report"]["skipped"]["outside_photo"] == 2
    # alice (not an admin) may not import at all
    assert _import(client, alice, "x.csv", good.encode()).status_code == 403

    # fixations outside the photo are counted and dropped; the rest lands
    mixed = good + "CG01,GZ1,-5,-5,100\n"
    first = _import(client, admin, "mixed.csv", mixed.encode())
    assert first.status_code == 201, first.text
    assert first.json()["report"]["skipped"]["outside_photo"] == 1 and first.json()["fixations"] == 10
    after = _count(app)
    again = _import(client, admin, "same-file-again.csv", mixed.encode())
    assert again.status_code == 409 and again.json()["code"] == "duplicate_import"
    assert _count(app) == after
    # a lab-defined group creates the unregistered participants with it
    new = _import(client, admin, "new.csv", good.replace("CG02", "LAB7").encode(), group="residents")
    assert new.status_code == 201 and new.json()["report"]["new_participants"] == ["LAB7"]
    groups = {p["code"]: p["group"] for p in client.get("/api/v1/gaze/participants", headers=admin.headers).json()[
        "items"]}
    assert groups["LAB7"] == "residents"
    assert client.post("/api/v1/gaze/participants", headers=admin.headers,
                       json={"code": "P 1", "group": "non_clinician"}).json()["code"] == "invalid_participant_code"
