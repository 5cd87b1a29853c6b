"""Model folders: listing, one load per process, and refusal of every inconsistent folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from app.nets import ModelFolderError, iresnet18, list_models, load_model, read_model_folder
from app.nets import registry as registry_module
from app.nets.gallery import write_gallery
from tests.nets.helpers import labels_json, randomise_, write_folder, write_json


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    network = randomise_(iresnet18(num_classes=4, width=0.25), seed=11)
    folder = write_folder(root / "demo", network, gallery="gallery.npz")
    rng = np.random.default_rng(0)
    write_gallery(folder / "gallery.npz", rng.normal(size=(6, 512)).astype(np.float16),
                  ["syn_a", "syn_a", "syn_b", "syn_c", "syn_d", "syn_d"], [f"img{i}" for i in range(6)])
    return folder


@pytest.fixture
def models(tmp_path: Path, good_folder: Path) -> Path:
    """A fresh copy of the good folder under ``<tmp>/models/demo`` for a test to break."""
    root = tmp_path / "models"
    shutil.copytree(good_folder, root / "demo")
    return root


def _edit_card(folder: Path, edit: Callable[[dict], None]) -> None:
    card = json.loads((folder / "model.json").read_text())
    edit(card)
    write_json(folder / "model.json", card)


def _edit_weights(folder: Path, edit: Callable[[dict], None]) -> None:
    state = torch.load(folder / "weights.pt", weights_only=True)
    edit(state)
    torch.save(state, folder / "weights.pt")


def test_good_folder_loads_with_everything(models: Path) -> None:
    model = load_model(models)  # default id "demo"
    assert model.version == "demo@0.1.0"
    assert [label.id for label in model.labels] == ["syn_a", "syn_b", "syn_c", "syn_d"]
    assert model.labels[0].omim == "100000" and model.labels[0].hpo[0].id == "HP:0000316"
    assert not model.network.training
    assert model.gallery is not None and model.gallery.embeddings.dtype == np.float32
    assert model.gallery.label_indices.tolist() == [0, 0, 1, 2, 3, 3]
    np.testing.assert_allclose(np.linalg.norm(model.gallery.unit, axis=1), 1.0, rtol=1e-5)
    assert model.card.gradcam_layer == "layer4" and model.network.get_submodule("layer4") is model.network.layer4


def test_model_is_loaded_once_per_process_even_from_many_threads(models: Path, monkeypatch) -> None:
    calls = []
    real = registry_module.read_model_folder

    def counting(folder: Path):
        calls.append(folder)
        return real(folder)

    monkeypatch.setattr(registry_module, "read_model_folder", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_model(models, "demo"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 6 and all(r is results[0] for r in results)
    assert load_model(models, "demo") is results[0]


def test_list_models_skips_broken_cards(models: Path) -> None:
    shutil.copytree(models / "demo", models / "other")
    _edit_card(models / "other", lambda c: c.update(id="other", version="2.0"))
    (models / "broken").mkdir()
    (models / "broken" / "model.json").write_text("{not json")
    (models / "not-a-model").mkdir()
    assert [(c.id, c.version_string) for c in list_models(models)] == [("demo", "demo@0.1.0"), ("other", "other@2.0")]
    assert list_models(models / "nowhere") == []


def _breakers() -> list[tuple[str, Callable[[Path], None], str]]:
    return [
        ("missing weights", lambda f: (f / "weights.pt").unlink(), r"weights file weights.pt is missing"),
        ("missing card", lambda f: (f / "model.json").unlink(), r"model.json is missing"),
        ("missing labels", lambda f: (f / "labels.json").unlink(), r"labels.json is missing"),
        ("missing gallery", lambda f: (f / "gallery.npz").unlink(), r"gallery.npz is missing"),
        ("label count", lambda f: write_json(f / "labels.json", labels_json(3)),
         r"labels.json has 3 labels but the card says num_classes 4"),
        ("card num_classes", lambda f: _edit_card(f, lambda c: c["architecture"].update(num_classes=5)),
         r"labels.json has 4 labels but the card says num_classes 5"),
        ("head size", lambda f: _edit_weights(f, lambda s: s.update({"head.weight": torch.zeros(5, 512),
                                                                     "head.bias": torch.zeros(5)})),
         r"head has 5 outputs, labels list 4"),
        ("missing key", lambda f: _edit_weights(f, lambda s: s.pop("layer1.0.bn1.weight")),
         r"weights are missing key layer1\.0\.bn1\.weight$"),
        ("unexpected key", lambda f: _edit_weights(f, lambda s: s.update({"layer3.9.bn1.weight": torch.ones(64)})),
         r"unexpected key layer3\.9\.bn1\.weight"),
        ("no head", lambda f: _edit_weights(f, lambda s: [s.pop("head.weight"), s.pop("head.bias")]),
         r"no classifier head"),
        ("wrong width", lambda f: _edit_card(f, lambda c: c["architecture"].update(width=0.5)),
         r"weights key conv1.weight has shape \(16, 3, 3, 3\) but iresnet18 at width 0.5 expects \(32, 3, 3, 3\)"),
        ("nan weights", lambda f: _edit_weights(f, lambda s: s["fc.weight"].__setitem__((0, 0), float("nan"))),
         r"fc.weight contains NaN"),
        ("unknown architecture", lambda f: _edit_card(f, lambda c: c["architecture"].update(name="resnet18")),
         r"unknown architecture 'resnet18'"),
        ("gallery label", lambda f: write_gallery(f / "gallery.npz", np.ones((2, 512)), ["syn_a", "syn_z"],
                                                  ["a", "b"]),
         r"gallery.npz label 'syn_z' is not in labels.json"),
        ("gallery dim", lambda f: write_gallery(f / "gallery.npz", np.ones((2, 256)), ["syn_a", "syn_b"], ["a", "b"]),
         r"gallery.npz embeddings are 256-d, expected 512"),
        ("gallery ragged", lambda f: write_gallery(f / "gallery.npz", np.ones((3, 512)), ["syn_a", "syn_b"],
                                                   ["a", "b", "c"]),
         r"gallery.npz labels has shape \(2,\), expected \(3,\)"),
        ("gallery pickled", lambda f: np.savez(f / "gallery.npz", embeddings=np.ones((1, 512)),
                                               labels=np.array(["syn_a"], dtype=object), image_ids=np.array(["a"])),
         r"gallery.npz cannot be read"),
        ("sha256", lambda f: _edit_card(f, lambda c: c.update(sha256={"weights.pt": "0" * 64})),
         r"sha256 of weights.pt does not match the card"),
        ("id mismatch", lambda f: _edit_card(f, lambda c: c.update(id="other")),
         r"model.json id 'other' does not match the folder name 'demo'"),
        ("template", lambda f: _edit_card(f, lambda c: c["alignment_template"][0].__setitem__(0, 40.0)),
         r"alignment_template differs from the ArcFace template"),
        ("normalisation", lambda f: _edit_card(f, lambda c: c["input"].update(normalisation="x/255")),
         r"input normalisation 'x/255' is not supported"),
        ("gradcam layer", lambda f: _edit_card(f, lambda c: c.update(gradcam_layer="layer9")),
         r"gradcam_layer 'layer9' is not a module of iresnet18"),
        ("outside file", lambda f: _edit_card(f, lambda c: c.update(weights="../weights.pt")),
         r"'weights' must be a file inside the model folder"),
        ("duplicate label", lambda f: write_json(f / "labels.json", labels_json(3) + labels_json(1)),
         r"labels.json lists label id 'syn_a' twice"),
    ]


@pytest.mark.parametrize(("what", "breaker", "message"), _breakers(), ids=[b[0] for b in _breakers()])
def test_inconsistent_folder_is_refused_with_a_message_naming_the_problem(
    models: Path, what: str, breaker: Callable[[Path], None], message: str
) -> None:
    breaker(models / "demo")
    with pytest.raises(ModelFolderError, match=message) as caught:
        load_model(models, "demo")
    assert caught.value.folder == models / "demo" and str(models / "demo") in str(caught.value)


def test_refused_folder_is_not_cached(models: Path) -> None:
    (models / "demo" / "weights.pt").rename(models / "demo" / "aside.pt")
    with pytest.raises(ModelFolderError):
        load_model(models, "demo")
    (models / "demo" / "aside.pt").rename(models / "demo" / "weights.pt")
    assert load_model(models, "demo").version == "demo@0.1.0"


def test_correct_sha256_is_accepted(models: Path) -> None:
    digest = hashlib.sha256((models / "demo" / "weights.pt").read_bytes()).hexdigest()
    _edit_card(models / "demo", lambda c: c.update(sha256={"weights.pt": digest.upper()}))
    assert read_model_folder(models / "demo").card.sha256 == {"weights.pt": digest}


@pytest.mark.parametrize("model_id", ["../demo", "demo/..", "", ".hidden"])
def test_model_ids_cannot_escape_the_root(models: Path, model_id: str) -> None:
    with pytest.raises(ModelFolderError, match="not a valid model id"):
        load_model(models, model_id)


def test_missing_model_folder(models: Path) -> None:
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_model(models, "absent")


def test_card_round_trip_keeps_unknown_keys(models: Path) -> None:
    _edit_card(models / "demo", lambda c: c.update(training={"seed": 3}))
    card = read_model_folder(models / "demo").card
    assert card.extra == {"training": {"seed": 3}} and card.to_json()["training"] == {"seed": 3}
