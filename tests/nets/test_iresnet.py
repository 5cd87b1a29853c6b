"""The iResNet family: arcface_torch key names and shapes, layer facts, single use of every module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.nets import build_network, iresnet18, iresnet34, iresnet50, iresnet100, preprocess
from app.nets.iresnet import IResNet
from tests.nets.helpers import expected_arcface_keys


@pytest.fixture(scope="module")
def r50() -> IResNet:
    return iresnet50(num_classes=7)


def test_iresnet50_state_dict_has_exactly_the_arcface_torch_keys_plus_the_head(r50: IResNet) -> None:
    keys = list(r50.state_dict())
    expected = expected_arcface_keys((3, 4, 14, 3))
    assert len(expected) == 475
    assert set(keys) == {*expected, "head.weight", "head.bias"}
    assert len(keys) == len(set(keys)) == 477
    assert "layer3.13.bn3.running_var" in keys and "layer3.14.bn1.weight" not in keys


def test_iresnet50_shapes_match_arcface_torch(r50: IResNet) -> None:
    shapes = {k: tuple(v.shape) for k, v in r50.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 3, 3)
    assert shapes["prelu.weight"] == (64,)
    assert shapes["layer1.0.bn1.weight"] == (64,)
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1)
    assert shapes["layer2.0.bn1.weight"] == (64,)  # bn1 normalises the block's *input*
    assert shapes["layer2.0.conv1.weight"] == (128, 64, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer3.13.conv2.weight"] == (256, 256, 3, 3)
    assert shapes["layer4.2.prelu.weight"] == (512,)
    assert shapes["bn2.weight"] == (512,)
    assert shapes["fc.weight"] == (512, 25088)
    assert shapes["features.weight"] == (512,)
    assert shapes["head.weight"] == (7, 512)
    backbone = sum(v.numel() for k, v in r50.named_parameters() if not k.startswith("head."))
    assert backbone == 43_590_848  # arcface_torch's r50 (the 174 MB float32 backbone.pth)


def test_normalisation_layers_follow_arcface_torch(r50: IResNet) -> None:
    norms = [m for m in r50.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-5 and m.momentum == 0.1 and m.affine for m in norms)
    assert torch.equal(r50.features.weight, torch.ones(512)) and not r50.features.weight.requires_grad
    prelus = [m for m in r50.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 + 24 and all(m.num_parameters == m.weight.numel() > 1 for m in prelus)
    convs = [m for m in r50.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    # the stride of a stage is in conv2 (and the shortcut), not conv1
    assert r50.layer1[0].conv1.stride == (1, 1) and r50.layer1[0].conv2.stride == (2, 2)
    assert r50.layer1[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize(
    ("build", "blocks"),
    [(iresnet18, (2, 2, 2, 2)), (iresnet34, (3, 4, 6, 3)), (iresnet100, (3, 13, 30, 3))],
)
def test_other_depths_have_the_arcface_torch_layout(build, blocks) -> None:
    network = build(num_classes=3)
    assert set(network.state_dict()) == {*expected_arcface_keys(blocks), "head.weight", "head.bias"}


def test_width_multiplier_scales_channels_but_not_the_embedding() -> None:
    network = iresnet18(num_classes=4, width=0.25).eval()
    assert network.channels == (16, 32, 64, 128)
    assert network.conv1.weight.shape == (16, 3, 3, 3)
    assert network.fc.weight.shape == (512, 128 * 49)
    logits, embedding = network(torch.zeros(2, 3, 112, 112))
    assert logits.shape == (2, 4) and embedding.shape == (2, 512)


def test_forward_returns_head_of_the_embedding() -> None:
    network = iresnet18(num_classes=3, width=0.25).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        logits, embedding = network(x)
        assert torch.allclose(logits, network.head(embedding))
        assert torch.equal(embedding, network.embed(x))


def test_unknown_architecture_and_bad_input_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet18'"):
        build_network("resnet18", num_classes=2)
    with pytest.raises(ValueError, match=r"\(N, 3, 112, 112\)"):
        iresnet18(num_classes=2, width=0.25)(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize(("build", "width"), [(iresnet18, 0.25), (iresnet50, 1.0)])
def test_every_module_runs_exactly_once_per_forward(build, width) -> None:
    network = build(num_classes=3, width=width).eval()
    named = list(network.named_modules(remove_duplicate=False))
    assert len(named) == len({id(m) for _, m in named}), "a module instance is registered under two names"
    calls: dict[str, int] = {}

    def count(name: str):
        return lambda module, args, output: calls.__setitem__(name, calls.get(name, 0) + 1)

    handles = [m.register_forward_hook(count(name)) for name, m in named if name]
    with torch.no_grad():
        network(torch.randn(1, 3, 112, 112))
    for handle in handles:
        handle.remove()
    assert max(calls.values()) == 1
    assert set(calls) == {name for name, _ in named if name}  # and every module takes part


def test_full_backward_hooks_work_on_every_module() -> None:
    """Attribution libraries hook modules' outputs; in-place ops on those outputs would raise here."""
    network = iresnet18(num_classes=3, width=0.25).eval()
    seen: list[str] = []
    for name, module in network.named_modules():
        if name and not isinstance(module, nn.Sequential | IResNet):
            module.register_full_backward_hook(lambda mod, gin, gout, name=name: seen.append(name))
    x = torch.randn(1, 3, 112, 112, requires_grad=True)
    logits, _ = network(x)
    logits[0, 1].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert "layer4.1.bn3" in seen and "layer1.0.prelu" in seen


def test_preprocess_maps_rgb_uint8_to_minus_one_one() -> None:
    image = np.zeros((112, 112, 3), np.uint8)
    image[..., 0] = 255
    image[0, 0] = (0, 128, 255)
    batch = preprocess(image)
    assert batch.shape == (1, 3, 112, 112) and batch.dtype == torch.float32 and batch.is_contiguous()
    assert batch[0, 0, 5, 5] == 1.0 and batch[0, 1, 5, 5] == -1.0  # channel 0 is R: no BGR swap
    assert torch.allclose(batch[0, :, 0, 0], torch.tensor([-1.0, 128 / 255 * 2 - 1, 1.0]), atol=1e-6)
    assert preprocess([image, image]).shape == (2, 3, 112, 112)
    assert preprocess(np.stack([image] * 3)).shape == (3, 3, 112, 112)


@pytest.mark.parametrize(
    "bad", [np.zeros((112, 112, 3), np.float32), np.zeros((112, 112), np.uint8), np.zeros((100, 112, 3), np.uint8),
            np.zeros((112, 112, 4), np.uint8)],
)
def test_preprocess_refuses_anything_but_112_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="aligned crops"):
        preprocess(bad)
