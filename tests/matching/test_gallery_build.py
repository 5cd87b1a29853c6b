"""`gestaltlens gallery build / add / remove / list` (issue 22): a gallery built from generated photos for an
imported random-weight iResNet (no head) turns /predict from nothing into a distance ranking; refused rows
and crashes leave the served folder exactly as it was; the grey and headless service semantics hold."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from app.cli import cli
from app.migrate import upgrade
from app.nets import gallery_build
from app.nets.errors import ModelFolderError
from app.nets.gallery_build import RefusedRows, add_photos, build, remove_rows
from app.nets.import_command import import_checkpoint
from app.nets.iresnet import build_network
from app.nets.predict import encode_query
from app.nets.registry import clear_cache, read_model_folder
from app.settings import Settings, get_settings
from app.synth.generate import generate_one
from app.vision.pipeline import default_detector, process_photo
from app.web.factory import create_app
from tests.conftest import encode, make_account

SYNDROMES = ("syn_a", "syn_c", "syn_f")


class Headless(torch.nn.Module):
    """A glint360k-style network: one 512-d output, no syndrome head."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight iResNet-18 (width 0.25) exported to ONNX without a head and imported."""
    root = tmp_path_factory.mktemp("import")
    torch.manual_seed(3)
    network = build_network("iresnet18", num_classes=2, width=0.25).eval()
    source = root / "random.onnx"
    torch.onnx.export(Headless(network), (torch.zeros(1, 3, 112, 112),), str(source), dynamo=False,
                      input_names=["input"], output_names=["embedding"], opset_version=17)
    report = import_checkpoint(source, root / "models" / "rand", arch="iresnet18", width=0.25)
    assert not report.has_head
    return report.folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder per syndrome: 3 generated patients each, one photo without a face, one unreadable file."""
    root = tmp_path_factory.mktemp("photos")
    for syndrome in SYNDROMES:
        (root / syndrome).mkdir()
        for index in range(3):
            (root / syndrome / f"P{syndrome[-1]}{index}.jpg").write_bytes(
                generate_one(seed=22, class_id=syndrome, index=index).jpeg)
    (root / "syn_a" / "blank.png").write_bytes(encode(np.full((200, 200, 3), 128, np.uint8), "PNG"))
    (root / "syn_c" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "models" / folder.name
    shutil.copytree(folder, target)
    return target


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _predict(models_dir: Path, model_id: str, tmp_path: Path, photo: bytes) -> dict:
    clear_cache()  # a server reads its model once: a new gallery is served after a restart
    url = f"sqlite:///{tmp_path / 'gm.db'}"
    upgrade(url)
    app = create_app(Settings(data_dir=tmp_path / "d", database_url=url, secret_key="k" * 40,
                              models_dir=models_dir, model=model_id))
    account = make_account(app, f"u{len(list(tmp_path.iterdir()))}", "clinician")
    img = base64.b64encode(photo).decode()
    with TestClient(app) as client:
        data = client.post("/predict", json={"img": img}, headers=account.headers).json()
        data["encode"] = client.post("/encode", json={"img": img}, headers=account.headers).json()
    app.state.engine.dispose()
    return data


def test_a_built_gallery_turns_predict_into_a_distance_ranking(imported: Path, photos: Path, tmp_path: Path) -> None:
    folder = _copy(imported, tmp_path)
    query = generate_one(seed=22, class_id="syn_c", index=0, severity=0.5).jpeg  # patient Pc0 again
    before = _predict(folder.parent, folder.name, tmp_path / "a", query)
    # a network without a head and without a gallery ranks nothing (no "class 0 (unnamed)" with score 1.0)
    assert before["suggested_syndromes_list"] == [] and before["ranked_by"] == "none"
    frame = before["encode"]["encodings"]
    assert all(conf == [0] for conf in frame["class_conf"].values())  # headless, as the service's ONNX member

    report = build(folder, photos, progress=False)
    assert report.added == 9 and report.rows == 9 and report.syndromes == 3
    assert sorted((s["source"], s["code"]) for s in report.skipped) == [
        ("syn_a/blank.png", "no_face"), ("syn_c/broken.jpg", "corrupt_image")]
    model = read_model_folder(folder)
    provenance = gallery_build.provenance_of(model)
    assert provenance["images"] == 9 and provenance["subjects"] == 9 and provenance["model"] == model.version
    assert {sid: e["images"] for sid, e in provenance["syndromes"].items()} == dict.fromkeys(SYNDROMES, 3)
    assert {s["reason"] for s in provenance["skipped"]} == {"no face", "corrupt image"}
    assert [label.id for label in model.syndromes] == list(SYNDROMES)  # the head's placeholder is not one

    after = _predict(folder.parent, folder.name, tmp_path / "b", query)
    assert after["ranked_by"] == "gallery"
    rows = after["suggested_syndromes_list"]
    assert [r["syndrome_name"] for r in rows] and len(rows) == 3
    distances = [r["distance"] for r in rows]
    assert distances == sorted(distances) and all(r["gestalt_score"] == r["distance"] for r in rows)
    # the distances are those of the gallery file and the query's own encoding (same intake, same view)
    crop = process_photo(query, detector=default_detector()).aligned.crop
    _, views = encode_query(model, crop)
    with np.load(folder / model.card.gallery) as stored:
        unit = stored["embeddings"] / np.linalg.norm(stored["embeddings"], axis=-1, keepdims=True)
        labels, ids = stored["labels"], stored["image_ids"]
    distance = 1 - unit @ (views[0] / np.linalg.norm(views[0]))
    for row in rows:
        sid = next(s for s in SYNDROMES if s.replace("_", " ") == row["syndrome_name"])
        best = int(np.flatnonzero(labels == sid)[np.argmin(distance[labels == sid])])
        assert row["image_id"] == ids[best] and abs(row["distance"] - round(float(distance[best]), 3)) <= 1e-3
    # what clinicians see names no file: pseudonyms, stable under the model folder's key
    for row in rows:
        assert re.fullmatch(r"img-[0-9a-f]{16}", row["image_id"]) and re.fullmatch(r"subj-[0-9a-f]{16}",
                                                                                   row["subject_id"])
    assert ".jpg" not in json.dumps(after) and "Pc0" not in json.dumps(after)
    assert oct((folder / "gallery_id_key").stat().st_mode & 0o777) == "0o600"


def test_refused_rows_and_crashes_leave_the_folder_as_it_was(imported: Path, photos: Path, tmp_path: Path) -> None:
    folder = _copy(imported, tmp_path)
    build(folder, photos, progress=False)
    before = _digests(folder)
    table = tmp_path / "gallery.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "syndrome_id", "syndrome_name", "omim", "gene", "subject_id"])
        writer.writerow([str(photos / "syn_a" / "Pa0.jpg"), "syn_x", "X syndrome", "123456", "ABC", "S1"])
        writer.writerow(["../../etc/passwd", "syn_x", "X syndrome", "123456", "ABC", "S2"])
        writer.writerow(["a.jpg", "syn_y", "Y syndrome", "12345", "", "S3"])
    with pytest.raises(RefusedRows) as refused:
        add_photos(folder, table, progress=False)
    assert len(refused.value.problems) == 3  # outside the folder (twice: abs and ..) and a bad OMIM id
    assert _digests(folder) == before

    def crash(_data: bytes) -> None:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        build(folder, photos, progress=False, process=crash)
    assert _digests(folder) == before
    with pytest.raises(RefusedRows):  # an image already in the gallery
        add_photos(folder, photos, progress=False)
    assert _digests(folder) == before


def test_add_remove_and_list(imported: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _copy(imported, tmp_path)
    subset = tmp_path / "subset"
    (subset / "syn_a").mkdir(parents=True)
    (subset / "syn_a" / "Pa0.jpg").write_bytes((photos / "syn_a" / "Pa0.jpg").read_bytes())
    build(folder, subset, progress=False)
    table = tmp_path / "more.csv"
    rare = photos / "syn_f" / "Pf1.jpg"
    table.write_text("path,syndrome_id,syndrome_name,omim,gene,subject_id\n"
                     f"{rare.name},ultra_rare,Ultra-rare syndrome,OMIM:612345,GENE1;GENE2,S9\n")
    (tmp_path / rare.name).write_bytes(rare.read_bytes())
    report = add_photos(folder, table, progress=False)
    assert report.added == 1 and report.rows == 2
    model = read_model_folder(folder)
    rare_label = next(x for x in model.syndromes if x.id == "ultra_rare")
    assert rare_label.omim == "612345" and [g.name for g in rare_label.genes] == ["GENE1", "GENE2"]

    monkeypatch.setenv("GESTALTLENS_MODELS_DIR", str(folder.parent))
    get_settings.cache_clear()
    try:
        listed = CliRunner().invoke(cli, ["gallery", "list", "--model", folder.name])
        refused = CliRunner().invoke(cli, ["gallery", "remove", "--model", folder.name, "--subject", "nobody"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    summary = {row["syndrome_id"]: row for row in json.loads(listed.output)["syndromes"]}
    assert summary["ultra_rare"]["images"] == 1 and summary["ultra_rare"]["omim"] == "612345"
    assert refused.exit_code == 2
    with np.load(folder / model.card.gallery) as stored:  # a CSV's stated subject id is kept as given
        assert "S9" in stored["subject_ids"].tolist() and not any(".jpg" in i for i in stored["image_ids"])
    removed = remove_rows(folder, syndrome_ids=["ultra_rare"])
    assert removed.removed == 1 and removed.rows == 1
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(("gallery", ".model", ".check"))
                 and p.name != "gallery_id_key"]
    assert len(leftovers) == 3  # the new gallery, its labels and its provenance; the old ones are gone
    with pytest.raises(RefusedRows):
        remove_rows(folder, subject_ids=["Pz9"])
    by_source = remove_rows(folder, subject_ids=["Pa0"])  # the admin's name for it finds its pseudonym
    assert by_source.removed == 1 and by_source.rows == 0
    emptied = read_model_folder(folder)
    assert emptied.gallery is None
    assert [p.name for p in folder.iterdir() if p.name.startswith("gallery")] == ["gallery_id_key"]


def test_without_a_gallery_no_higher_is_better_number_is_a_distance() -> None:
    """GM clients sort by distance / gestalt_score (lower is better): a softmax must never land there."""
    from app.nets.predict import Prediction
    from app.predictions.gm_format import syndrome_entries

    ranked = [Prediction(rank=1, syndrome_id="a", name="A", omim="123456", score=0.9, distance=None, image_id=None),
              Prediction(rank=2, syndrome_id="b", name="B", omim=None, score=0.1, distance=None, image_id=None)]
    entries = syndrome_entries(ranked)
    assert [e["syndrome_name"] for e in entries] == ["A", "B"]  # still best first
    assert all(e["distance"] is None and e["gestalt_score"] is None for e in entries)


def test_a_gallery_built_before_pseudonyms_keeps_its_photos_and_people_whole(imported: Path, photos: Path,
                                                                           tmp_path: Path) -> None:
    """Galleries written before ids were pseudonymised hold file names as ids: adding the same photos again must
    still be refused, a known person keeps their id, and removing by name takes every row of them."""
    from dataclasses import replace

    from app.nets.gallery_sources import id_key, read_folder_sources

    folder = _copy(imported, tmp_path)
    subset = tmp_path / "subset"
    (subset / "syn_a").mkdir(parents=True)
    for name in ("Pa0.jpg", "Pa1.jpg"):
        (subset / "syn_a" / name).write_bytes((photos / "syn_a" / name).read_bytes())
    build(folder, subset, progress=False)
    model = read_model_folder(folder)
    stored = gallery_build._read_stored(model)
    sources = {s.image_id: s.source for s in read_folder_sources(subset, id_key(folder))}
    legacy = [replace(r, image_id=sources[r.image_id], subject_id=Path(sources[r.image_id]).stem)
              for r in stored.rows]
    gallery_build._commit(model, legacy, stored.labels, [], [])  # as the older version wrote it
    with pytest.raises(RefusedRows) as again:
        add_photos(folder, subset, progress=False)
    assert "syn_a/Pa0.jpg" in str(again.value)

    more = tmp_path / "more"
    (more / "syn_a").mkdir(parents=True)  # a second photo of patient Pa0
    (more / "syn_a" / "Pa0.png").write_bytes(encode(np.asarray(Image.open(photos / "syn_a" / "Pa0.jpg")), "PNG"))
    assert add_photos(folder, more, progress=False).added == 1
    with np.load(folder / read_model_folder(folder).card.gallery) as written:
        assert sorted(written["subject_ids"].tolist()) == ["Pa0", "Pa0", "Pa1"]
    removed = remove_rows(folder, subject_ids=["Pa0"])
    assert removed.removed == 2 and removed.rows == 1


def test_a_damaged_pseudonym_key_is_refused_not_used(imported: Path, photos: Path, tmp_path: Path) -> None:
    folder = _copy(imported, tmp_path)
    (folder / "gallery_id_key").write_text("")  # an empty key would make the pseudonyms plain, guessable hashes
    with pytest.raises(ModelFolderError, match="gallery_id_key"):
        build(folder, photos, progress=False)
