"""arcface_torch / GestaltMatcher-Arc style checkpoints load through the registry without conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.nets import ModelFolderError, iresnet18, iresnet50, load_model, preprocess
from app.nets.checkpoint import extract_head, load_weights_into, merge_weights, split_state_dict
from app.nets.iresnet import IResNet
from tests.nets.helpers import card_json, crop, expected_arcface_keys, labels_json, randomise_, write_json


@pytest.fixture(scope="module")
def r50() -> IResNet:
    return randomise_(iresnet50(num_classes=5), seed=50)


@pytest.fixture(scope="module")
def query() -> torch.Tensor:
    return preprocess([crop(1), crop(2)])


def _folder(root: Path, model_id: str, network: IResNet, **card: object) -> Path:
    folder = root / model_id
    folder.mkdir(parents=True)
    spec = network.spec
    write_json(folder / "model.json", card_json(model_id, spec.name, spec.width, spec.num_classes, **card))
    write_json(folder / "labels.json", labels_json(spec.num_classes))
    return folder


def _assert_same_network(loaded: IResNet, reference: IResNet, query: torch.Tensor) -> None:
    with torch.inference_mode():
        logits, embedding = loaded(query)
        ref_logits, ref_embedding = reference(query)
    assert torch.isfinite(ref_embedding).all() and ref_embedding.abs().max() > 0
    torch.testing.assert_close(embedding, ref_embedding, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_arcface_torch_backbone_file_plus_separate_head_file(tmp_path: Path, r50: IResNet, query) -> None:
    backbone, head = split_state_dict(r50)
    assert set(backbone) == set(expected_arcface_keys((3, 4, 14, 3))) and set(head) == {"weight", "bias"}
    folder = _folder(tmp_path, "gm-r50", r50, weights="backbone.pth", head_weights="classifier.pth")
    torch.save(backbone, folder / "backbone.pth")
    torch.save(head, folder / "classifier.pth")
    model = load_model(tmp_path, "gm-r50")
    assert not model.network.training and model.version == "gm-r50@0.1.0"
    _assert_same_network(model.network, r50, query)


def test_merged_state_dict_with_head(tmp_path: Path, r50: IResNet, query) -> None:
    folder = _folder(tmp_path, "merged-r50", r50)
    torch.save(r50.state_dict(), folder / "weights.pt")
    _assert_same_network(load_model(tmp_path, "merged-r50").network, r50, query)


def test_float16_weights_are_cast_to_float32(tmp_path: Path, query) -> None:
    network = randomise_(iresnet18(num_classes=5, width=0.25), seed=3)
    folder = _folder(tmp_path, "half", network)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()},
               folder / "weights.pt")
    loaded = load_model(tmp_path, "half").network
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    rounded = iresnet18(num_classes=5, width=0.25)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in network.state_dict().items()})
    _assert_same_network(loaded, rounded.eval(), query)


@pytest.mark.parametrize(
    "spelling",
    ["", "fc.", "head.", "classifier.", "classifier.1.", "module.classifier.1."],
)
def test_separate_head_is_found_under_common_spellings(spelling: str) -> None:
    weight, bias = torch.randn(4, 512), torch.randn(4)
    found = extract_head({f"{spelling}weight": weight, f"{spelling}bias": bias})
    assert torch.equal(found["weight"], weight) and torch.equal(found["bias"], bias)


def test_dataparallel_prefixes_and_state_dict_wrappers_are_accepted(tmp_path: Path, query) -> None:
    network = randomise_(iresnet18(num_classes=5, width=0.25), seed=4)
    backbone, head = split_state_dict(network)
    folder = _folder(tmp_path, "ddp", network, weights="backbone.pth", head_weights="head.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in backbone.items()}}, folder / "backbone.pth")
    torch.save({"classifier.1.weight": head["weight"], "classifier.1.bias": head["bias"]}, folder / "head.pth")
    _assert_same_network(load_model(tmp_path, "ddp").network, network, query)


def test_checkpoints_without_num_batches_tracked_load() -> None:
    network = randomise_(iresnet18(num_classes=5, width=0.25), seed=5)
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    target = iresnet18(num_classes=5, width=0.25)
    load_weights_into(target, state)
    assert torch.equal(target.layer1[0].bn1.running_var, network.layer1[0].bn1.running_var)


def test_head_given_twice_is_refused() -> None:
    network = iresnet18(num_classes=5, width=0.25)
    with pytest.raises(ModelFolderError, match="already contain head"):
        merge_weights(network.state_dict(), {"weight": torch.zeros(5, 512), "bias": torch.zeros(5)})


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint that would run code on load is not a weights file."""
    network = iresnet18(num_classes=5, width=0.25)
    folder = _folder(tmp_path, "pickle", network)
    torch.save({"model": network}, folder / "weights.pt")  # a whole module: needs full unpickling
    with pytest.raises(ModelFolderError, match="weights-only"):
        load_model(tmp_path, "pickle")
