"""Conformance of the GestaltMatcher-Arc service routes (POST /predict, /encode, /crop, GET /status).

Written from the service's documented shapes (its README and the fields its main.py / lib/evaluation.py /
lib/encode.py produce), not from our implementation: every route, every error, base64 variants, one face,
no face and several faces. The model is the real demo model; genes and subject ids come from a copy of
its folder whose labels and gallery carry them, as a GMDB-derived folder would.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.migrate import upgrade
from app.nets.ensemble import ALL_AUGMENTATIONS, augment
from app.nets.predict import embed
from app.nets.registry import load_model, sha256_file
from app.settings import PROJECT_ROOT, Settings
from app.synth.generate import generate_one
from app.vision.pipeline import default_detector, process_photo
from app.web.factory import create_app
from tests.conftest import Account, encode, make_account, upload
from tests.nets.test_ensemble import build_ensemble_folder

DEMO = load_model(PROJECT_ROOT / "models", "demo")
SYNDROME_KEYS = {"syndrome_name", "omim_id", "distance", "gestalt_score", "image_id", "subject_id"}
GENE_KEYS = {"gene_name", "gene_entrez_id", "distance", "gestalt_score", "image_id", "subject_id"}
ENCODING_COLUMNS = {"img_name", "model", "flip", "gray", "class_conf", "representations"}
ROUTES = ("/predict", "/encode", "/crop")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def one_face() -> bytes:
    return generate_one(seed=9100, class_id=DEMO.labels[2].id, index=0, severity=1.0).jpeg


@pytest.fixture(scope="module")
def two_faces() -> bytes:
    """Two generated patients side by side (the second smaller), as one photo."""
    left = generate_one(seed=9101, class_id=DEMO.labels[1].id, index=0, severity=1.0).rgb
    right = generate_one(seed=9102, class_id=DEMO.labels[3].id, index=0, severity=1.0).rgb
    right = cv2.resize(right, (right.shape[1] * 3 // 4, right.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    canvas = np.full((left.shape[0], left.shape[1] + right.shape[1], 3), 128, np.uint8)
    canvas[:, : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1]:] = right
    return encode(canvas, "JPEG", quality=92)


@pytest.fixture(scope="module")
def no_face() -> bytes:
    return encode(np.full((240, 320, 3), 170, np.uint8), "PNG")


def _crop_of(client: TestClient, account: Account, img: str) -> np.ndarray:
    response = client.post("/crop", json={"img": img}, headers=account.headers)
    assert response.status_code == 200, response.text
    png = base64.b64decode(response.json()["crop"])
    assert png.startswith(b"\x89PNG")
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_predict_answers_in_the_service_shape(client: TestClient, alice: Account, one_face: bytes) -> None:
    response = client.post("/predict", json={"img": b64(one_face)}, headers=alice.headers)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    data = response.json()
    # The service's four fields; GestaltLens may add siblings (its clients copy or ignore unknown keys).
    assert {"model_version", "gallery_version", "suggested_genes_list", "suggested_syndromes_list"} <= set(data)
    assert data["model_version"] == DEMO.card.version and isinstance(data["gallery_version"], str)
    syndromes = data["suggested_syndromes_list"]
    assert len(syndromes) == len(DEMO.labels)  # every syndrome of the gallery, once
    assert len({s["syndrome_name"] for s in syndromes}) == len(syndromes)
    for entry in syndromes:
        assert set(entry) == SYNDROME_KEYS
        assert entry["omim_id"] == "" or type(entry["omim_id"]) is int
        assert isinstance(entry["distance"], float) and entry["distance"] == round(entry["distance"], 3)
        assert entry["gestalt_score"] == entry["distance"]
        assert isinstance(entry["image_id"], str) and entry["image_id"]
        assert isinstance(entry["subject_id"], str)  # the demo gallery records no subjects: ""
    distances = [s["distance"] for s in syndromes]
    assert distances == sorted(distances)
    # The same ranking as our own API gives for this photo, rounded as the service rounds.
    case = upload(client, alice, one_face).json()
    ours = {p["name"]: p["distance"] for p in case["predictions"]}
    for entry in syndromes[: len(ours)]:
        assert entry["distance"] == round(ours[entry["syndrome_name"]], 3)
    assert data["suggested_genes_list"] == []  # the synthetic syndromes have no genes


def test_encode_gives_every_model_and_augmentation(client: TestClient, alice: Account, one_face: bytes) -> None:
    response = client.post("/encode", json={"img": b64(one_face)}, headers=alice.headers)
    assert response.status_code == 200, response.text
    frame = response.json()["encodings"]
    assert set(frame) == ENCODING_COLUMNS
    rows = [str(i) for i in range(len(ALL_AUGMENTATIONS))]  # one network x flip x grey
    assert all(list(frame[column]) == rows for column in ENCODING_COLUMNS)
    assert [frame["model"][r] for r in rows] == ["m0"] * 4 and {frame["img_name"][r] for r in rows} == {"input"}
    assert [(frame["flip"][r], frame["gray"][r]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    crop = process_photo(one_face).aligned.crop
    expected = embed(DEMO, [augment(crop, a) for a in ALL_AUGMENTATIONS])
    for i, r in enumerate(rows):
        assert len(frame["class_conf"][r]) == len(DEMO.labels)
        assert len(frame["representations"][r]) == 512
        np.testing.assert_allclose(frame["representations"][r], expected[i], rtol=1e-4, atol=1e-4)
    # The augmentations really differ: the mirrored face is not the face.
    assert not np.allclose(frame["representations"]["0"], frame["representations"]["2"], atol=1e-3)


def test_crop_is_the_aligned_face_as_png(client: TestClient, alice: Account, one_face: bytes) -> None:
    crop = _crop_of(client, alice, b64(one_face))
    assert crop.shape == (112, 112, 3)
    np.testing.assert_array_equal(crop, process_photo(one_face).aligned.crop)


def test_base64_variants_decode_like_the_service(client: TestClient, alice: Account, one_face: bytes) -> None:
    reference = _crop_of(client, alice, b64(one_face))
    wrapped = base64.encodebytes(one_face).decode()  # a newline every 76 characters
    assert "\n" in wrapped
    variants = {
        "encodebytes": wrapped,
        "crlf": wrapped.replace("\n", "\r\n"),
        "data url": "data:image/jpeg;base64," + b64(one_face),
        "no padding": b64(one_face).rstrip("="),
        "urlsafe": base64.urlsafe_b64encode(one_face).decode(),
        "surrounding spaces": "  " + b64(one_face) + "\n",
    }
    for name, text in variants.items():
        np.testing.assert_array_equal(_crop_of(client, alice, text), reference, err_msg=name)
    for route in ROUTES:
        for bad in ("not base64!!", b64(one_face)[:-3] + "*==", "abcde"):
            answer = client.post(route, json={"img": bad}, headers=alice.headers)
            assert answer.status_code == 400, (route, bad)
            assert answer.json()["code"] == "invalid_base64" and answer.json()["message"]


def test_no_face_answers_as_the_service_does(client: TestClient, alice: Account, no_face: bytes) -> None:
    predict = client.post("/predict", json={"img": b64(no_face)}, headers=alice.headers)
    assert predict.status_code == 200  # the service's habit: its clients read "message"
    assert predict.json()["message"] == "Face alignment error." and predict.json()["code"] == "no_face"
    for garbage in (b"", b"%PDF-1.4 not a photo"):  # files OpenCV cannot read fail alignment in the service
        answer = client.post("/predict", json={"img": b64(garbage)}, headers=alice.headers)
        assert answer.status_code == 200 and answer.json()["message"] == "Face alignment error."
    for route in ("/encode", "/crop"):  # the service has no answer here (it crashes); ours is a clear 422
        answer = client.post(route, json={"img": b64(no_face)}, headers=alice.headers)
        assert answer.status_code == 422
        assert answer.json()["message"] == "Face alignment error." and answer.json()["code"] == "no_face"


def test_several_faces_use_the_most_confident(client: TestClient, alice: Account, two_faces: bytes) -> None:
    faces = default_detector().detect(process_photo(two_faces, face_index=0).photo.rgb)
    assert len(faces) == 2
    best = max(range(2), key=lambda i: faces[i].score)
    expected = process_photo(two_faces, face_index=best).aligned.crop
    other = process_photo(two_faces, face_index=1 - best).aligned.crop
    crop = _crop_of(client, alice, b64(two_faces))
    np.testing.assert_array_equal(crop, expected)
    assert not np.array_equal(crop, other)
    predict = client.post("/predict", json={"img": b64(two_faces)}, headers=alice.headers)
    assert predict.status_code == 200 and predict.json()["suggested_syndromes_list"]
    encoded = client.post("/encode", json={"img": b64(two_faces)}, headers=alice.headers)
    np.testing.assert_allclose(encoded.json()["encodings"]["representations"]["0"],
                               embed(DEMO, expected[None])[0], rtol=1e-4, atol=1e-4)
    # Our own API is unchanged: it still asks which face.
    assert upload(client, alice, two_faces).json()["code"] == "multiple_faces"


def test_authentication_and_status(client: TestClient, alice: Account, one_face: bytes) -> None:
    basic = {"Authorization": "Basic " + b64(f"{alice.username}:{alice.password}".encode())}
    for route in ROUTES:
        refused = client.post(route, json={"img": b64(one_face)})
        assert refused.status_code == 401 and refused.json()["message"] and refused.json()["code"]
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert client.post(route, json={"img": b64(one_face)}, headers=basic).status_code == 200
    missing = client.post("/predict", json={}, headers=alice.headers)
    assert missing.status_code == 422 and {"detail", "code"} <= set(missing.json())
    status = client.get("/status")
    assert status.status_code == 200 and status.json()["status"] == "running"


def _gm_folder(tmp_path: Path) -> Path:
    """The demo folder with genes and OMIM ids on its labels and patient ids in its gallery."""
    folder = tmp_path / "models" / "demo"
    shutil.copytree(PROJECT_ROOT / "models" / "demo", folder)
    labels = json.loads((folder / "labels.json").read_text())
    labels[1]["genes"] = [{"name": "NIPBL", "entrez": "25836"}]
    labels[1]["omim"] = "122470"
    labels[2]["genes"] = [{"name": "SMC1A", "entrez": "8243"}, {"name": "HDAC8", "entrez": 55869}]
    labels[3]["genes"] = [{"name": "NIPBL", "entrez": "25836"}, {"name": "WBS region", "entrez": None}]
    labels[3]["omim"] = "OMIM:194050"
    (folder / "labels.json").write_text(json.dumps(labels))
    with np.load(folder / "gallery.npz") as gallery:
        arrays = {key: gallery[key] for key in gallery.files}
    arrays["subject_ids"] = np.array([f"P{i // 3:05d}" for i in range(len(arrays["image_ids"]))])
    with (folder / "gallery.npz").open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    card = json.loads((folder / "model.json").read_text())
    card["sha256"] = {name: sha256_file(folder / name) for name in card.get("sha256", {})}
    card["gallery_version"] = "10.10.2023"
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def _sqlite(tmp_path: Path) -> str:
    """A private SQLite database: these tests are about model folders, not databases (no second backend run)."""
    url = f"sqlite:///{tmp_path / 'gm.db'}"
    upgrade(url)
    return url


def test_genes_subjects_and_omim_follow_the_gallery(tmp_path: Path, one_face: bytes) -> None:
    migrated_url = _sqlite(tmp_path)
    folder = _gm_folder(tmp_path)
    settings = Settings(data_dir=tmp_path / "d", database_url=migrated_url, secret_key="k" * 40,
                        models_dir=folder.parent)
    app = create_app(settings)
    account = make_account(app, "gmuser", "clinician")
    labels = json.loads((folder / "labels.json").read_text())
    with np.load(folder / "gallery.npz") as gallery:
        subject_of = dict(zip(gallery["image_ids"].tolist(), gallery["subject_ids"].tolist(), strict=True))
    with TestClient(app) as client:
        data = client.post("/predict", json={"img": b64(one_face)}, headers=account.headers).json()
    app.state.engine.dispose()
    assert data["gallery_version"] == "10.10.2023"
    syndromes = data["suggested_syndromes_list"]
    for entry in syndromes:
        assert entry["subject_id"] == subject_of[entry["image_id"]]
    by_name = {s["syndrome_name"]: s for s in syndromes}
    assert by_name[labels[1]["name"]]["omim_id"] == 122470 and by_name[labels[3]["name"]]["omim_id"] == 194050
    assert by_name[labels[0]["name"]]["omim_id"] == ""
    # Expected gene list, built from the syndrome list as the service builds it from its gallery images.
    genes_of = {lab["name"]: lab.get("genes", []) for lab in labels}
    expected, seen = [], set()
    for entry in syndromes:
        for gene in genes_of[entry["syndrome_name"]]:
            entrez = None if gene["entrez"] is None else str(gene["entrez"])
            if (gene["name"], entrez) not in seen:
                seen.add((gene["name"], entrez))
                expected.append({"gene_name": gene["name"], "gene_entrez_id": entrez, "distance": entry["distance"],
                                 "gestalt_score": entry["distance"], "image_id": entry["image_id"],
                                 "subject_id": entry["subject_id"]})
    assert data["suggested_genes_list"] == expected
    assert {g["gene_name"] for g in expected} == {"NIPBL", "SMC1A", "HDAC8", "WBS region"}
    assert all(set(g) == GENE_KEYS for g in data["suggested_genes_list"])


def test_an_ensemble_with_tta_encodes_and_ranks_like_the_service(tmp_path: Path, one_face: bytes) -> None:
    migrated_url = _sqlite(tmp_path)
    folder = build_ensemble_folder(tmp_path / "models", per_class=1)
    settings = Settings(data_dir=tmp_path / "d", database_url=migrated_url, secret_key="k" * 40,
                        models_dir=folder.parent, model="ens")
    app = create_app(settings)
    account = make_account(app, "gmuser", "clinician")
    with TestClient(app) as client:
        frame = client.post("/encode", json={"img": b64(one_face)}, headers=account.headers).json()["encodings"]
        data = client.post("/predict", json={"img": b64(one_face)}, headers=account.headers).json()
        status = client.get("/status").json()
    app.state.engine.dispose()
    rows = [str(i) for i in range(8)]  # 2 networks x flip x grey
    assert list(frame["model"]) == rows and [frame["model"][r] for r in rows] == ["m0"] * 4 + ["m1"] * 4
    assert all(frame["class_conf"][r] == [0] for r in rows[4:])  # the headless member, as the service's ONNX one
    assert all(len(frame["class_conf"][r]) == len(DEMO.labels) for r in rows[:4])
    assert status["members"] == 2 and status["views"] == 8
    # The ranking, recomputed from what /encode returned and the gallery file: mean cosine distance over views.
    query = np.array([frame["representations"][r] for r in rows])
    with np.load(folder / "gallery.npz") as stored:
        gallery, labels = stored["embeddings"], stored["labels"]
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=2, keepdims=True)
    mean = (1.0 - np.einsum("nvd,vd->nv", g, q)).mean(axis=1)
    name_of = {label.id: label.name for label in DEMO.labels}
    expected = {name_of[c]: round(float(mean[labels == c].min()), 3) for c in np.unique(labels)}
    got = {s["syndrome_name"]: s["distance"] for s in data["suggested_syndromes_list"]}
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) <= 0.0011 for k in got)  # rounding of nearly-equal floats
