"""The data set folder: counts, split, shortcut cue and the on-disk format other code reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.synth.classes import CLASSES
from app.synth.dataset import FORMAT, DatasetSummary, class_counts, read_manifest, split_indices, write_dataset
from app.synth.generate import GENERATOR_VERSION, ShortcutSpec, generate_one
from app.synth.render import SHORTCUT_RGB, STICKER_CENTER_ALIGNED
from app.vision.detect import FaceDetector
from app.vision.pipeline import process_photo
from tests.synth.conftest import SEED, SHORTCUT

RECORD_KEYS = {
    "id",
    "split",
    "label",
    "label_index",
    "severity",
    "features",
    "shortcut",
    "image",
    "mask",
    "landmarks",
    "detected",
    "aligned",
    "aligned_mask",
    "landmarks_aligned",
    "align_matrix",
    "detected_error_px",
    "detect_error",
}


def test_imbalance_falls_geometrically() -> None:
    counts = class_counts(100, 10.0)
    assert list(counts) == [c.id for c in CLASSES]
    syndromes = [counts[c.id] for c in CLASSES[1:]]
    assert counts["unaffected"] == 100 and syndromes[0] == 100 and syndromes[-1] == 10
    k = len(syndromes) - 1
    for i, n in enumerate(syndromes):
        assert abs(n - 100 * 10 ** (-i / k)) <= 0.5
    assert syndromes == sorted(syndromes, reverse=True)
    assert set(class_counts(40).values()) == {40}
    assert min(class_counts(3, 100.0).values()) == 1
    with pytest.raises(ValueError):
        class_counts(10, 0.5)
    with pytest.raises(ValueError):
        class_counts(0)


def test_split_is_exact_and_deterministic() -> None:
    test = split_indices(SEED, "syn_a", 50, 0.2)
    assert len(test) == 10 and test == split_indices(SEED, "syn_a", 50, 0.2)
    assert test != split_indices(SEED + 1, "syn_a", 50, 0.2)
    assert split_indices(SEED, "syn_a", 50, 0.0) == set()


def test_shortcut_flag_follows_its_class() -> None:
    spec = ShortcutSpec("syn_e", probability=0.8, other_probability=0.1)
    n = 3000
    target = np.mean([spec.present(SEED, "syn_e", i) for i in range(n)])
    other = np.mean([spec.present(SEED, "syn_a", i) for i in range(n)])
    assert abs(target - 0.8) < 0.03 and abs(other - 0.1) < 0.02
    with pytest.raises(ValueError):
        ShortcutSpec("syn_e", probability=1.5)
    with pytest.raises(KeyError):
        ShortcutSpec("syn_zz")


def test_the_sticker_lands_in_the_aligned_crop_corner(detector: FaceDetector) -> None:
    spec = ShortcutSpec("syn_f", probability=1.0)
    face = generate_one(5, "syn_f", 0, shortcut=spec)
    plain = generate_one(5, "syn_f", 0)
    assert face.shortcut
    x, y = (round(v) for v in STICKER_CENTER_ALIGNED)
    crop = process_photo(face.jpeg, detector=detector).aligned.crop.astype(float)
    crop_plain = process_photo(plain.jpeg, detector=detector).aligned.crop.astype(float)
    colour = crop[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)
    target = np.array(SHORTCUT_RGB) * 255
    assert np.abs(colour - target).max() < 60, colour
    assert np.abs(crop_plain[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0) - target).max() > 60
    # It is a small corner cue: a disc of changed pixels, none of them on the inner face.
    changed = np.abs(face.rgb.astype(int) - plain.rgb.astype(int)).max(axis=2) > 0
    eyes = face.landmarks[:2].mean(axis=0)
    interocular = np.linalg.norm(face.landmarks[1] - face.landmarks[0])
    ys, xs = np.nonzero(changed)
    assert 0 < changed.sum() < np.pi * (0.5 * interocular) ** 2
    assert np.hypot(xs - eyes[0], ys - eyes[1]).min() > 0.8 * interocular


def test_tiny_dataset_matches_the_format(tiny_dataset: tuple[Path, DatasetSummary]) -> None:
    out, summary = tiny_dataset
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == FORMAT and meta["generator_version"] == GENERATOR_VERSION
    assert (meta["seed"], meta["count_per_class"], meta["imbalance"], meta["test_fraction"]) == (SEED, 2, 2.0, 0.5)
    assert meta["shortcut"] == SHORTCUT.to_dict()
    assert meta["classes"] == [c.to_dict() for c in CLASSES] and meta["classes"][0]["id"] == "unaffected"
    assert meta["counts"] == class_counts(2, 2.0) == summary.counts
    records = read_manifest(out)
    assert meta["n_images"] == len(records) == sum(meta["counts"].values())
    assert meta["n_detected"] == sum(r["detected"] for r in records)
    assert meta["detection_rate"] == pytest.approx(meta["n_detected"] / meta["n_images"])
    assert len({r["id"] for r in records}) == len(records)

    ids = [c["id"] for c in meta["classes"]]
    for record in records:
        assert set(record) == RECORD_KEYS, record["id"]
        assert record["split"] in ("train", "test")
        assert ids[record["label_index"]] == record["label"]
        assert record["shortcut"] == SHORTCUT.present(SEED, record["label"], int(record["id"].rsplit("-", 1)[1]))
        image = np.asarray(Image.open(out / record["image"]))
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert (out / record["image"]).read_bytes()[:2] == b"\xff\xd8"
        mask = np.asarray(Image.open(out / record["mask"]))
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
        landmarks = np.array(record["landmarks"])
        assert landmarks.shape == (5, 2)
        if record["label"] == "unaffected":
            assert record["severity"] == 0.0 and record["features"] == [] and not mask.any()
        else:
            assert 0.3 <= record["severity"] <= 1.0 and mask.any()
            assert record["features"] == meta["classes"][record["label_index"]]["features"]
        if record["detected"]:
            assert record["detect_error"] is None
            crop = np.asarray(Image.open(out / record["aligned"]))
            assert crop.shape == (112, 112, 3)
            aligned_mask = np.asarray(Image.open(out / record["aligned_mask"]))
            assert aligned_mask.shape == (112, 112) and set(np.unique(aligned_mask)) <= {0, 255}
            assert aligned_mask.any() == mask.any()
            assert np.array(record["landmarks_aligned"]).shape == (5, 2)
            matrix = np.array(record["align_matrix"])
            assert matrix.shape == (2, 3)
            carried = landmarks @ matrix[:, :2].T + matrix[:, 2]
            assert np.allclose(carried, record["landmarks_aligned"], atol=0.01)
            assert record["detected_error_px"] >= 0.0
        else:
            assert record["detect_error"]
            for key in ("aligned", "aligned_mask", "landmarks_aligned", "align_matrix", "detected_error_px"):
                assert record[key] is None
    for class_id, n in meta["counts"].items():
        split = [r["split"] for r in records if r["label"] == class_id]
        assert len(split) == n and split.count("test") == round(n * 0.5)
    listed = {Path(r[k]).name for r in records for k in ("image", "mask", "aligned", "aligned_mask") if r[k]}
    on_disk = {p.name for sub in ("images", "masks", "aligned", "aligned_masks") for p in (out / sub).iterdir()}
    assert listed == on_disk


def test_an_existing_dataset_is_not_overwritten(tiny_dataset: tuple[Path, DatasetSummary]) -> None:
    out, _ = tiny_dataset
    with pytest.raises(FileExistsError):
        write_dataset(out, seed=SEED, count_per_class=1, workers=1)
