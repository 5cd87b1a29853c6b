"""Issue 20's defects (hardening round three), one test each; each failed on main before its fix. Fault
injection with real processes for items 2 and 4 is in tests/test_faults.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cases.models import Case
from app.cli import cli
from app.gaze import synthetic
from app.gaze.models import Fixation, GazeImport
from app.ratings.models import Rating, RatingStudy
from app.settings import Settings, get_settings
from app.synth.generate import generate_one
from tests.conftest import Account, browser_headers, login, upload
from tests.explanations.test_api import wait_for


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


# --- 8 and 4 (gaze). Impossible values and unreadable files are refused with a 4xx; nothing lands --------


def _gaze_case(client: TestClient, admin: Account, face: bytes) -> dict:
    case = upload(client, admin, face, pseudonym="GZ1").json()
    response = client.post("/api/v1/gaze/participants", headers=admin.headers,
                           json={"code": "CG01", "group": "clinical_geneticist"})
    assert response.status_code == 201, response.text
    return case


def _gaze_import(client: TestClient, admin: Account, text: str, **form: str):
    return client.post("/api/v1/gaze/imports", headers=admin.headers,
                       files={"file": ("gaze.csv", text.encode(), "text/plain")}, data=form)


def _nothing_imported(app) -> None:
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Fixation)) == 0
        assert session.scalar(select(func.count()).select_from(GazeImport)) == 0


def test_gaze_imports_refuse_impossible_values(app, client: TestClient, admin: Account, face_jpeg: bytes) -> None:
    _gaze_case(client, admin, face_jpeg)
    header = "participant,case,x,y,duration_ms,onset_ms\n"
    good = "CG01,GZ1,200,200,250,0\n"
    for bad, reason in (("CG01,GZ1,210,210,1e308,10\n", "duration"), ("CG01,GZ1,210,210,200,nan\n", "onset"),
                        ("CG01,GZ1,210,210,200,inf\n", "onset"), ("CG01,GZ1,1e308,210,200,10\n", "position"),
                        ("CG01,GZ1,210,nan,200,10\n", "position")):
        response = _gaze_import(client, admin, header + good + bad)
        assert response.status_code == 422, (bad, response.text)
        body = response.json()
        assert body["code"] == "impossible_values" and body["report"]["impossible"][reason]["lines"] == [3], body
    for rect in ("0,0,1e308,1e308", "0,0,0,100", "nan,0,100,100"):
        response = _gaze_import(client, admin, header + good, space="screen", rect=rect)
        assert response.status_code == 422 and response.json()["code"] == "invalid_rect", (rect, response.text)
    _nothing_imported(app)
    assert _gaze_import(client, admin, header + good).status_code == 201


def test_gaze_files_that_break_the_readers_are_a_4xx(app, client: TestClient, admin: Account,
                                                     face_jpeg: bytes) -> None:
    case = _gaze_case(client, admin, face_jpeg)
    huge = "participant,case,x,y,duration_ms\nCG01,GZ1,200,200,250\nCG01,\"" + "x" * 140_000 + "\",1,1,1\n"
    response = _gaze_import(client, admin, huge)
    assert response.status_code == 422 and response.json()["code"] == "malformed_file", response.text[:500]
    with app.state.sessions() as session:
        row = session.get(Case, case["id"])
        synth = synthetic.SynthCase(row.id, row.pseudonym, row.photo_width, row.photo_height, row.align_matrix)
    tobii = synthetic.write_all([synth], [("CG01", "clinical_geneticist")], per_case=5, seed=3)[
        "tobii_pro_lab_export.tsv"].decode()
    lines = tobii.splitlines()
    columns = lines[0].split("\t")
    width = next(i for i, name in enumerate(columns) if name.lower().startswith("presented media width"))
    zero = [lines[0]] + ["\t".join("0" if i == width and cells[i].strip() else cell for i, cell in enumerate(cells))
                         for cells in (line.split("\t") for line in lines[1:])]
    response = client.post("/api/v1/gaze/imports", headers=admin.headers,
                           files={"file": ("export.tsv", "\n".join(zero).encode(), "text/plain")})
    assert response.status_code == 422, response.text[:500]
    assert response.json()["code"] == "impossible_values"
    assert "stimulus_rectangle" in response.json()["report"]["impossible"]
    page = client.post("/gaze/imports", headers={**admin.headers, "HX-Request": "true"},
                       files={"file": ("export.tsv", "\n".join(zero).encode(), "text/plain")})
    assert page.status_code == 422 and "impossible" in page.text
    _nothing_imported(app)


# --- 9. `gestaltlens gaze synth` never builds a path from a pseudonym ------------------------------------------


def test_gaze_synth_writes_only_inside_its_folder(client: TestClient, alice: Account, settings: Settings,
                                                  face_jpeg: bytes, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "deep" / "outside"
    out = tmp_path / "deep" / "er" / "synthetic"
    hostile = "../../../../outside/X"  # a clinician's pseudonym: from out/pupil/CG01/ up to tmp_path
    assert upload(client, alice, face_jpeg, pseudonym=hostile).status_code == 201
    monkeypatch.setenv("GESTALTLENS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GESTALTLENS_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        made = CliRunner().invoke(cli, ["gaze", "synth", str(out), "--per-case", "3"])
    finally:
        get_settings.cache_clear()
    assert made.exit_code == 0, made.output
    assert not target.exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".csv", ".tsv", ".txt")]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written), written


# --- 10. model import: declared sizes are checked before materialising; broken ONNX is one error line -------


def _model_import(source: Path, tmp_path: Path):
    result = CliRunner().invoke(cli, ["model", "import", str(source), "--out", str(tmp_path / "m" / source.stem),
                                      "--arch", "iresnet18", "--width", "0.25"])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.output.startswith("error: ") and "Traceback" not in result.output, result.output
    assert not (tmp_path / "m" / source.stem).exists()
    return result.output


def test_a_tiny_checkpoint_cannot_declare_a_huge_tensor(tmp_path: Path) -> None:
    import torch

    bomb = tmp_path / "bomb.pth"  # one float viewed as 12000 x 12000 with stride 0 (576 MB if materialised)
    torch.save({"weight": torch.zeros(1).expand(12_000, 12_000)}, bomb)
    assert bomb.stat().st_size < 2000
    output = _model_import(bomb, tmp_path)
    assert "refused before materialising" in output and "144000000 elements" in output, output
    shared = tmp_path / "shared.pth"  # one storage referenced by many tensors is read, and paid for, once
    base = torch.zeros(250_000)
    torch.save({f"t{i}": base[: 250_000 - i] for i in range(40)}, shared)
    assert "more memory than its storages hold" in _model_import(shared, tmp_path)


def test_broken_onnx_files_end_in_one_error_line(tmp_path: Path) -> None:
    import onnx
    import torch
    from onnx import TensorProto, helper

    from app.nets.registry import load_model
    from app.settings import PROJECT_ROOT

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0f" + bytes(range(256)) * 4)
    assert "not a readable ONNX model" in _model_import(garbage, tmp_path)
    whole = tmp_path / "whole.onnx"
    torch.onnx.export(load_model(PROJECT_ROOT / "models", "demo").network.eval(), (torch.zeros(1, 3, 112, 112),),
                      str(whole), dynamo=False, input_names=["input"], output_names=["logits", "embedding"],
                      opset_version=17)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    _model_import(truncated, tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 4 * 8 * 3 * 3 * 3)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], vals=[0.0] * 216)
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../" * 12 + str(secret).lstrip("/"))
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    traversing = tmp_path / "models-in" / "traversing.onnx"
    traversing.parent.mkdir()
    onnx.save(helper.make_model(graph), str(traversing))
    assert "external" in _model_import(traversing, tmp_path)


# --- 11. uvicorn's own 400s are our JSON error with the security headers -------------------------------------


def _raw(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}, body


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_requests_uvicorn_refuses_get_the_json_error_and_security_headers(migrated_url: str, tmp_path: Path) -> None:
    import json
    import os

    from tests.fault_support import free_port, serve, stop

    env = {**os.environ, "GESTALTLENS_DATABASE_URL": migrated_url, "GESTALTLENS_DATA_DIR": str(tmp_path / "data"),
           "GESTALTLENS_SECRET_KEY": "test-secret-key-that-is-long-enough", "GESTALTLENS_DEVICE": "cpu"}
    port = free_port()
    server = serve(env, tmp_path / "server.log", port)
    try:
        malformed = {
            "control character in a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x01b\r\n\r\n",
            "header folding": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n  folded\r\n\r\n",
            "invalid UTF-8 in the path": b"GET /cases/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
            "malformed cookie": b"GET /cases HTTP/1.1\r\nHost: x\r\nCookie: session=\x00abc\r\n\r\n",
            "garbage request line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        }
        for what, request in malformed.items():
            status, headers, body = _raw(port, request)
            assert status.startswith(b"HTTP/1.1 400"), (what, status, body)
            assert headers[b"content-type"] == b"application/json", (what, headers)
            assert json.loads(body)["code"] == "bad_request", (what, body)
            assert headers[b"cache-control"] == b"no-store" and headers[b"x-content-type-options"] == b"nosniff"
            assert b"frame-ancestors 'none'" in headers[b"content-security-policy"], (what, headers)
        status, headers, body = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200") and json.loads(body) == {"status": "ok"}
    finally:
        stop(server)


# --- 5. identical photos are one patient for the 5-patient floor --------------------------------------------


def test_one_photo_uploaded_five_times_is_one_patient(client: TestClient, alice: Account) -> None:
    faces = [generate_one(seed=515, class_id="syn_d", index=i).jpeg for i in range(5)]

    def case(jpeg: bytes, pseudonym: str | None = None) -> None:
        made = upload(client, alice, jpeg, **({"pseudonym": pseudonym} if pseudonym else {})).json()
        response = client.put(f"/api/v1/cases/{made['id']}/diagnosis", json={"syndrome_id": "syn_d"},
                              headers=alice.headers)
        assert response.status_code == 200, response.text

    def ask():
        return client.post("/api/v1/syndromes/syn_d/cohort", json={"methods": ["gradcam"]}, headers=alice.headers)

    for _ in range(5):
        case(faces[0])  # no pseudonym: before, each upload counted as its own patient
    refused = ask()
    assert refused.status_code == 422 and refused.json()["count"] == 1, refused.text
    case(faces[1], "Q1")
    case(faces[1], "Q2")  # the same photo under two pseudonyms: still one patient, and it links Q1 and Q2
    case(faces[2], "Q2")
    assert ask().json()["count"] == 2
    listed = {s["syndrome_id"]: s for s in client.get("/api/v1/syndromes", headers=alice.headers).json()}
    assert listed["syn_d"]["n_cases"] == 8 and listed["syn_d"]["n_patients"] == 2
    for jpeg in faces[3:]:
        case(jpeg)
    assert ask().json()["count"] == 4


# --- 1. a browser upload holds no pooled connection while its photo is processed; a full pool is "busy" ------


def test_uploads_hold_no_database_connection_while_the_photo_is_processed(app, client: TestClient, alice: Account,
                                                                        face_jpeg: bytes) -> None:
    from app.vision.detect import FaceDetector

    held: list[int] = []
    real = app.state.detector

    class CountingDetector(FaceDetector):
        """The real detector; it notes how many pooled connections are out while a photo is being detected."""

        def __init__(self) -> None:  # shares the real one's state instead of building another
            self.__dict__.update(real.__dict__)

        def detect(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            held.append(app.state.engine.pool.checkedout())
            return real.detect(*args, **kwargs)

    app.state.detector = CountingDetector()
    token = login(client, alice)
    by_cookie = client.post("/api/v1/cases", files={"photo": ("p.jpg", face_jpeg, "image/jpeg")},
                            headers=browser_headers(token))
    assert by_cookie.status_code == 201, by_cookie.text
    assert held and held[-1] == 0, held
    client.cookies.clear()
    assert upload(client, alice, face_jpeg).status_code == 201
    assert held[-1] == 0, held


def test_an_exhausted_pool_is_busy_not_unavailable(alice_token_app) -> None:
    app, account = alice_token_app
    engine = app.state.engine
    with TestClient(app) as client:
        held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
        try:
            response = client.get("/api/v1/cases", headers=account.headers)
        finally:
            for connection in held:
                connection.close()
        assert client.get("/api/v1/cases", headers=account.headers).status_code == 200
    assert response.status_code == 503 and response.json()["code"] == "database_busy", response.text
    assert response.headers["retry-after"]


@pytest.fixture
def alice_token_app(settings: Settings):
    from app.web.factory import create_app
    from tests.conftest import make_account

    application = create_app(settings.model_copy(update={"database_pool_timeout_s": 0.5}))
    yield application, make_account(application, "alice", "clinician")
    application.state.engine.dispose()


# --- 6. a blinded study never asks a rater to rate their own case -------------------------------------------


def test_a_blinded_study_refuses_raters_who_own_its_cases(app, client: TestClient, admin: Account, alice: Account,
                                                          bob: Account, face_jpeg: bytes) -> None:
    bobs = upload(client, bob, face_jpeg, pseudonym="B1").json()
    admins = upload(client, admin, face_jpeg).json()
    body = {"name": "Blind", "cases": [admins["id"], bobs["id"]], "methods": ["saliency"], "blinded": True}
    refused = client.post("/api/v1/studies", headers=admin.headers, json={**body, "raters": ["alice", "bob"]})
    assert refused.status_code == 422 and refused.json()["code"] == "rater_owns_case", refused.text
    assert refused.json()["owners"] == {"bob": ["B1"]} and "bob owns B1" in refused.json()["detail"]
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RatingStudy)) == 0
    for raters, blinded in ((["alice"], True), (["alice", "bob"], False)):
        created = client.post("/api/v1/studies", headers=admin.headers,
                              json={**body, "raters": raters, "blinded": blinded})
        assert created.status_code == 201, created.text


# --- 4. the cohort page below the floor answers its 422, not a 500 while drawing the error --------------------


def test_asking_for_a_cohort_below_the_floor_from_the_page_is_a_422(client: TestClient, alice: Account,
                                                                  face_jpeg: bytes) -> None:
    made = upload(client, alice, face_jpeg).json()
    assert client.put(f"/api/v1/cases/{made['id']}/diagnosis", json={"syndrome_id": "syn_b"},
                      headers=alice.headers).status_code == 200
    token = login(client, alice)
    for extra in ({"HX-Request": "true"}, {"Accept": "text/html"}):
        headers = {k: v for k, v in browser_headers(token).items() if k != "HX-Request"} | extra
        response = client.post("/syndromes/syn_b/cohort", data={"objective": "logit"}, headers=headers)
        assert response.status_code == 422, response.text[:300]
        assert "at least 5" in response.text  # the floor, said
        if "HX-Request" not in extra:  # a whole page: it still knows the user (no DetachedInstanceError)
            assert "alice" in response.text
        else:  # htmx gets a fragment that fits where it lands (issue 24.2), never a whole page
            assert 'data-code="too_few_cases"' in response.text and "<nav" not in response.text


# --- 12. a case's gaze page is paginated, however many fixations were imported --------------------------------


def test_the_gaze_page_of_a_case_draws_one_page_of_fixations(app, client: TestClient, admin: Account,
                                                             face_jpeg: bytes) -> None:
    page_size = 2000  # app.gaze.routes.PAGE_SIZE
    _gaze_case(client, admin, face_jpeg)
    rows = [f"CG01,GZ1,{200 + i % 50},{200 + i // 50 % 50},{100 + i % 7},{i * 300}" for i in range(page_size + 321)]
    response = _gaze_import(client, admin, "participant,case,x,y,duration_ms,onset_ms\n" + "\n".join(rows))
    assert response.status_code == 201, response.text[:300]
    with app.state.sessions() as session:
        case_id = session.scalar(select(Case.id).where(Case.pseudonym == "GZ1"))
    first = client.get(f"/gaze/cases/{case_id}", headers=admin.headers)
    assert first.status_code == 200
    assert first.text.count('class="fixation"') == page_size and f"{page_size + 321:,}" in first.text
    second = client.get(f"/gaze/cases/{case_id}?page=2", headers=admin.headers)
    assert second.text.count('class="fixation"') == 321
    api = client.get(f"/api/v1/gaze/cases/{case_id}/fixations?limit=100&offset=2300", headers=admin.headers).json()
    assert api["total"] == page_size + 321 and len(api["items"]) == 21
