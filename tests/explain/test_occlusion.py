"""Occlusion maps: a plain reference loop, Captum's Occlusion, and the incremental path against full passes.

The networks are small (iResNet-18 at width 0.25) with ``randomise_`` weights and convolutions ×3 so that
occluding a square changes the logits measurably; the demo model checks the trained case.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from app.explain.occlusion import (
    InferenceForward,
    _IncrementalOcclusion,
    inference_forward,
    occlusion_map,
    occlusion_windows,
)
from app.nets.iresnet import IResNet, iresnet18, iresnet34
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT
from tests.nets.helpers import responsive


@pytest.fixture(scope="module")
def network() -> IResNet:
    return responsive(iresnet18(num_classes=5, width=0.25), seed=3)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    coarse = torch.rand(1, 3, 14, 14, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(coarse, size=(112, 112), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def logits_of(network: IResNet) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return network(x)[0]

    return forward


def reference_occlusion(network: IResNet, x: torch.Tensor, target: int, window: int, stride: int,
                        baseline: float) -> np.ndarray:
    """Written plainly: every window position, one forward pass each, accumulate and divide."""
    _, _, height, width = x.shape
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    with torch.no_grad():
        clean = network(x)[0][0, target].item()
        y = 0
        while True:
            x0 = 0
            while True:
                occluded = x.clone()
                occluded[:, :, y:y + window, x0:x0 + window] = baseline  # slicing cuts it off at the border
                total[y:y + window, x0:x0 + window] += clean - network(occluded)[0][0, target].item()
                count[y:y + window, x0:x0 + window] += 1
                if x0 + window >= width:
                    break
                x0 += stride
            if y + window >= height:
                break
            y += stride
    assert count.min() > 0
    return (total / count).astype(np.float32)


def assert_same_map(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape == (112, 112)
    assert actual.dtype == np.float32
    scale = float(np.abs(expected).max())
    assert scale > 1e-3, "the map is (nearly) zero: the comparison would prove nothing"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)
    assert np.corrcoef(actual.ravel(), expected.ravel())[0, 1] >= 0.9999


def test_windows_follow_captum_and_cut_off_at_the_border() -> None:
    windows = occlusion_windows(112, 112, 10, 5)
    assert len(windows) == 22 * 22  # starts 0, 5, ..., 105; the last one is cut to 7 pixels
    assert windows[-1].tolist() == [105, 112, 105, 112]
    assert occlusion_windows(112, 112, 16, 8).shape == (13 * 13, 4)  # 96 / 8 = 12 steps, exactly on the border
    assert occlusion_windows(112, 112, 112, 1).tolist() == [[0, 112, 0, 112]]


@pytest.fixture(scope="module")
def reference(network: IResNet, image: torch.Tensor) -> np.ndarray:
    return reference_occlusion(network, image, target=2, window=16, stride=10, baseline=-1.0)


@pytest.mark.parametrize("forward_kind", ["plain", "inference"])
def test_matches_a_plain_reference_loop(network: IResNet, image: torch.Tensor, reference: np.ndarray,
                                        forward_kind: str) -> None:
    # 96 / 10 is not whole: the last window in each direction is cut to 12 pixels
    forward = logits_of(network) if forward_kind == "plain" else inference_forward(network)
    actual = occlusion_map(forward, image, target=2, window=16, stride=10, batch_size=16)
    assert_same_map(actual, reference)


def test_matches_captum_occlusion_on_the_demo_model(image: torch.Tensor) -> None:
    demo = load_model(PROJECT_ROOT / "models", "demo").network
    target = 4
    captum = Occlusion(logits_of(demo)).attribute(
        image, sliding_window_shapes=(3, 10, 10), strides=(3, 5, 5), baselines=-1.0, target=target,
        perturbations_per_eval=64,
    )
    assert torch.equal(captum[0, 0], captum[0, 1]) and torch.equal(captum[0, 0], captum[0, 2])
    actual = occlusion_map(inference_forward(demo), image, target=target)  # defaults: 10 / 5 / black
    assert_same_map(actual, captum[0, 0].numpy())


@pytest.mark.parametrize(("window", "stride", "baseline"), [
    (9, 9, 0.0),     # small squares; the last ones cut to 4 pixels (the default 10 / 5 is the Captum test's)
    (20, 13, 0.5),   # 92 / 13 is not whole either
    (30, 30, -1.0),  # large squares that do not overlap
    (112, 5, -1.0),  # one window: the whole image
])
def test_incremental_path_equals_full_forward_passes(network: IResNet, image: torch.Tensor, window: int,
                                                     stride: int, baseline: float) -> None:
    forward = inference_forward(network)
    full = occlusion_map(forward, image, target=1, window=window, stride=stride, baseline=baseline,
                         incremental=False)
    fast = occlusion_map(forward, image, target=1, window=window, stride=stride, baseline=baseline)
    if window == 112:
        assert np.allclose(fast, fast[0, 0]) and np.allclose(fast, full, rtol=1e-4, atol=1e-6)
    else:
        assert_same_map(fast, full)


@pytest.mark.parametrize("max_crop_fraction", [0.0, 0.3, 1.0])
def test_incremental_logits_equal_full_logits_for_every_window(image: torch.Tensor, max_crop_fraction: float) -> None:
    """Per window, not just per map, with none / some / all blocks run on crops, on iResNet-34's layout.

    Small squares (5 px, stride 4: the last ones cut to 3 px) at the corners, along the borders and inside.
    """
    network = responsive(iresnet34(num_classes=3, width=0.25), seed=5)
    forward = inference_forward(network)
    every = occlusion_windows(112, 112, 5, 4)  # 28 x 28 positions
    rng = np.random.default_rng(0)
    picked = [0, 27, 28 * 27, 28 * 28 - 1, 1, 28, 28 * 28 - 2, 28 * 27 - 1, *rng.choice(len(every), 16, replace=False)]
    windows = every[picked]
    engine = _IncrementalOcclusion(forward, image, windows, -1.0, max_crop_fraction=max_crop_fraction)
    if max_crop_fraction == 0.0:
        assert engine.blocks_on_crops == 0
    elif max_crop_fraction == 1.0:
        assert engine.blocks_on_crops == len(forward.blocks)
    else:
        assert 0 < engine.blocks_on_crops < len(forward.blocks)
    batch = image.expand(len(windows), -1, -1, -1).clone()
    for i, (y0, y1, x0, x1) in enumerate(windows):
        batch[i, :, y0:y1, x0:x1] = -1.0
    with torch.no_grad():
        expected = network(batch)[0]
    actual = torch.cat([engine.logits(slice(b, b + 10)) for b in range(0, len(windows), 10)])
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(engine.clean_logits, network(image)[0].detach(), rtol=0, atol=1e-5 * scale)
    # the occluded logits differ from the clean ones by far more than the tolerance: the check is not vacuous
    assert float((expected - engine.clean_logits).abs().max()) > 1e-2 * scale


def test_progress_is_monotone_and_ends_at_one(network: IResNet, image: torch.Tensor) -> None:
    for forward in (inference_forward(network), logits_of(network)):
        seen: list[float] = []
        occlusion_map(forward, image, target=0, window=30, stride=20, batch_size=7, on_progress=seen.append)
        assert len(seen) == 6  # 6 x 6 = 36 windows (starts 0, 20, ..., 100) in batches of 7
        assert all(a < b for a, b in itertools.pairwise(seen))
        assert seen[-1] == 1.0 and seen[0] > 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 0}, "window must be between 1"),
    ({"window": 113}, "window must be between 1"),
    ({"window": 10.0}, "window must be an integer"),
    ({"stride": 0}, "stride must be at least 1"),
    ({"window": 10, "stride": 11}, "must not exceed window"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"baseline": float("nan")}, "baseline must be a finite number"),
    ({"target": 5}, "out of range"),
    ({"target": -1}, "out of range"),
    ({"target": True}, "target must be a class index"),
])
def test_arguments_are_checked(network: IResNet, image: torch.Tensor, kwargs: dict, message: str) -> None:
    arguments = {"target": 0, **kwargs}
    for forward in (inference_forward(network), logits_of(network)):
        with pytest.raises(ValueError, match=message):
            occlusion_map(forward, image, **arguments)


def test_input_shape_and_incremental_request_are_checked(network: IResNet, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        occlusion_map(logits_of(network), image[0], target=0)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        occlusion_map(logits_of(network), image.expand(2, -1, -1, -1), target=0)
    with pytest.raises(ValueError, match="inference_forward"):
        occlusion_map(logits_of(network), image, target=0, incremental=True)
    # stride may exceed the window only when one window covers everything (Captum's rule too)
    whole = occlusion_map(logits_of(network), image, target=0, window=112, stride=200)
    assert np.allclose(whole, whole[0, 0])


def test_inference_forward_matches_and_leaves_the_network_alone(network: IResNet, image: torch.Tensor) -> None:
    original = copy.deepcopy(network)
    network.train()  # the copy computes what eval mode computes, whatever mode the network is in
    requires_grad = [p.requires_grad for p in network.parameters()]
    forward = inference_forward(network)
    assert isinstance(forward, InferenceForward) and inference_forward(network) is forward
    batch = torch.cat([image, -image, torch.zeros_like(image)])
    with torch.no_grad():
        expected = original(batch)[0]
    torch.testing.assert_close(forward(batch), expected, rtol=1e-4, atol=1e-5)
    occlusion_map(forward, image, target=0, window=40, stride=40)

    assert network.training
    assert [p.requires_grad for p in network.parameters()] == requires_grad
    assert not network._forward_hooks and not network._backward_hooks
    for (name, value), (_, before) in zip(network.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(value, before), name
    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(network(batch)[0], expected, rtol=0, atol=0)

    # new weights in the same network object build a new copy; the old copy keeps the old weights
    changed = copy.deepcopy(network)
    with torch.no_grad():
        changed.head.bias.add_(1.0)
    again = inference_forward(changed)
    with torch.no_grad():
        torch.testing.assert_close(again(batch), expected + 1.0, rtol=1e-4, atol=1e-5)
        changed.head.bias.sub_(1.0)
    refreshed = inference_forward(changed)
    assert refreshed is not again
    torch.testing.assert_close(refreshed(batch), expected, rtol=1e-4, atol=1e-5)
