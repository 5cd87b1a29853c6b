"""Ensembles with test-time augmentation in a model folder: loading, refusals, the augmentations and the
ranking (cosine distance averaged over every member × augmentation view, as GestaltMatcher-Arc ranks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.nets.checkpoint import export_state_dict
from app.nets.ensemble import ALL_AUGMENTATIONS, Augmentation, Member, augment, encode_views
from app.nets.errors import ModelFolderError
from app.nets.gallery import write_gallery
from app.nets.iresnet import iresnet18
from app.nets.predict import predict
from app.nets.registry import load_model, read_model_folder, sha256_file
from app.settings import PROJECT_ROOT
from app.synth.generate import generate_one
from app.vision.align import align_face

DEMO = load_model(PROJECT_ROOT / "models", "demo")


def gallery_crops(per_class: int = 2) -> tuple[list[np.ndarray], list[str], list[str]]:
    crops, labels, ids = [], [], []
    for c, label in enumerate(DEMO.labels):
        for k in range(per_class):
            face = generate_one(seed=7300 + c, class_id=label.id, index=k, severity=1.0)
            crops.append(align_face(face.rgb, face.landmarks).crop)
            labels.append(label.id)
            ids.append(f"{label.id}-{k}")
    return crops, labels, ids


def build_ensemble_folder(root: Path, per_class: int = 2) -> Path:
    """``root/ens``: the demo network as m0 plus a headless iResNet-18 (like the service's glint360k member),
    flip × grey TTA, and a gallery encoded by both under every augmentation, with subject ids."""
    folder = root / "ens"
    folder.mkdir(parents=True)
    for name in ("weights.pt", "labels.json"):
        shutil.copy(DEMO.folder / name, folder / name)
    torch.manual_seed(21)
    member = iresnet18(num_classes=len(DEMO.labels), width=0.25).eval()
    torch.save(export_state_dict(member), folder / "glint.pt")  # with a (never used) head, as an import writes
    card = json.loads((DEMO.folder / "model.json").read_text())
    for key in ("calibration", "out_of_distribution"):
        card.pop(key, None)
    card.update(id="ens", gallery="gallery.npz")
    card["ensemble"] = {"members": [{"id": "glint", "architecture": {"name": "iresnet18", "width": 0.25},
                                     "weights": "glint.pt", "has_head": False}],
                        "tta": {"flip": True, "gray": True}}
    crops, labels, ids = gallery_crops(per_class)
    members = (Member("m0", "demo", DEMO.network), Member("m1", "glint", member, has_head=False))
    views = np.stack([np.stack([v.embedding for v in encode_views(members, crop, ALL_AUGMENTATIONS)])
                      for crop in crops])  # (N, 8, 512)
    write_gallery(folder / "gallery.npz", views, labels, ids, subject_ids=[f"S{i}" for i in range(len(ids))])
    card["sha256"] = {name: sha256_file(folder / name) for name in ("weights.pt", "labels.json", "glint.pt",
                                                                     "gallery.npz")}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def ensemble_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ensemble_folder(tmp_path_factory.mktemp("models"))


def test_augmentations_are_the_services() -> None:
    crop = align_face(generate_one(seed=1, class_id="syn_a", index=0).rgb,
                      generate_one(seed=1, class_id="syn_a", index=0).landmarks).crop
    np.testing.assert_array_equal(augment(crop, Augmentation(flip=True)), crop[:, ::-1])
    # The service decodes with cv2 (BGR) and greys with OpenCV: bit for bit, on the crop and on random pixels
    # (float BT.601 weights differ from OpenCV's fixed point by one level on some pixels).
    rng = np.random.default_rng(0)
    for image in (crop, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)):
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        grey = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2RGB)
        np.testing.assert_array_equal(augment(image, Augmentation(gray=True)), grey)
        np.testing.assert_array_equal(augment(image, Augmentation(flip=True, gray=True)), grey[:, ::-1])
    # the float rule that was used before is not the service's: the test above can tell them apart
    float_grey = np.clip(np.rint(image.astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 255).astype(np.uint8)
    assert (float_grey != grey[..., 0]).any()
    assert [(a.flip, a.gray) for a in ALL_AUGMENTATIONS] == [(False, False), (False, True), (True, False), (True, True)]


def test_an_ensemble_folder_loads_and_ranks_by_the_mean_view_distance(ensemble_folder: Path) -> None:
    model = read_model_folder(ensemble_folder)
    assert [m.name for m in model.ensemble] == ["m0", "m1"] and model.views == 8
    assert model.ensemble[1].has_head is False
    face = generate_one(seed=7400, class_id=DEMO.labels[4].id, index=0, severity=1.0)
    crop = align_face(face.rgb, face.landmarks).crop
    result = predict(model, crop, top_k=len(model.labels))
    # Independently: unit vectors per view, cosine distance per view, mean over the 8 views, nearest per class.
    query = np.stack([v.embedding for v in encode_views(model.ensemble, crop, model.tta.augmentations)])
    with np.load(ensemble_folder / "gallery.npz") as stored:
        gallery, labels, ids = stored["embeddings"], stored["labels"], stored["image_ids"]
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=2, keepdims=True)
    mean = (1.0 - np.einsum("nvd,vd->nv", g, q)).mean(axis=1)
    for p in result.ranked:
        rows = np.flatnonzero(labels == p.syndrome_id)
        assert p.distance == pytest.approx(mean[rows].min(), abs=1e-6)
        assert p.image_id == ids[rows[np.argmin(mean[rows])]]
        assert p.subject_id == "S" + str(rows[np.argmin(mean[rows])])
    assert [p.distance for p in result.ranked] == sorted(p.distance for p in result.ranked)
    # The members and views matter: the primary network alone would rank with other distances.
    alone = 1.0 - g[:, 0, :] @ q[0]
    assert not np.allclose(alone, mean, atol=1e-3)


def test_an_ensemble_gallery_with_the_wrong_number_of_views_is_refused(ensemble_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ens"
    shutil.copytree(ensemble_folder, folder)
    with np.load(folder / "gallery.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    write_gallery(folder / "gallery.npz", arrays["embeddings"][:, :4], arrays["labels"], arrays["image_ids"])
    card = json.loads((folder / "model.json").read_text())
    card["sha256"]["gallery.npz"] = sha256_file(folder / "gallery.npz")
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match=r"4 embedding view\(s\).*ranks with 8"):
        read_model_folder(folder)
    card["ensemble"]["members"][0]["weights"] = "../outside.pt"
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match="inside the model folder"):
        read_model_folder(folder)
