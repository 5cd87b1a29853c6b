"""Augmentation geometry and randomness; ranking metrics on hand-made cases; the flip safety rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.nets.augment import AugmentConfig, augment
from app.nets.card import Label
from app.nets.data import DatasetInfo
from app.nets.metrics import ranking_metrics
from app.nets.train import _has_lateral_features

STILL = AugmentConfig(max_shift_px=0, max_rotation_deg=0, max_scale=0, brightness=0, contrast=0, colour=0,
                      hflip=False)


def _batch(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_zero_jitter_is_the_identity() -> None:
    x = _batch()
    torch.testing.assert_close(augment(x, torch.Generator().manual_seed(0), STILL), x, atol=1e-4, rtol=0)


def test_flip_mirrors_exactly_and_only_when_enabled() -> None:
    x = _batch(16)
    out = augment(x, torch.Generator().manual_seed(0), AugmentConfig(**{**STILL.to_json(), "hflip": True}))
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-4) for o, xi in zip(out, x, strict=True)]
    kept = [torch.allclose(o, xi, atol=1e-4) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_augmentation_is_reproducible_by_generator_and_stays_in_range() -> None:
    x = _batch()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1 and a.shape == x.shape
    # mild: a jittered crop stays close to the original (alignment is not destroyed)
    assert (a - x).abs().mean() < 0.6


def test_shift_moves_content_by_pixels() -> None:
    x = torch.full((1, 3, 112, 112), -1.0)
    x[:, :, 50:60, 50:60] = 1.0
    config = AugmentConfig(**{**STILL.to_json(), "max_shift_px": 3.0})
    out = augment(x, torch.Generator().manual_seed(0), config)
    ys, xs = np.nonzero(out[0, 0].numpy() > 0)
    assert abs(xs.mean() - 54.5) <= 3.01 and abs(ys.mean() - 54.5) <= 3.01


def _labels(n: int) -> list[Label]:
    return [Label(id=f"s{i}", name=f"S{i}") for i in range(n)]


def test_ranking_metrics_by_softmax_and_by_gallery_distance() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    targets = np.array([0, 1, 2, 2])
    by_softmax = ranking_metrics(probabilities, targets, _labels(3))
    assert by_softmax["top1"] == pytest.approx(0.5) and by_softmax["n"] == 4
    assert by_softmax["per_class"] == {"s0": {"n": 1, "top1": 1.0, "top5": 1.0},
                                       "s1": {"n": 1, "top1": 0.0, "top5": 1.0},
                                       "s2": {"n": 2, "top1": 0.5, "top5": 1.0}}
    assert by_softmax["confusion"]["matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    distances = np.array([[0.9, 0.1, 0.5], [0.9, 0.2, 0.5], [0.4, 0.3, 0.2], [np.inf, np.inf, 0.6]])
    by_gallery = ranking_metrics(probabilities, targets, _labels(3), distances)
    assert by_gallery["top1"] == pytest.approx(0.75)  # sample 3: class 2 is the only one in the gallery
    assert by_gallery["confusion"]["matrix"] == [[0, 1, 0], [0, 1, 0], [0, 0, 2]]


def test_top5_needs_more_than_five_classes_to_differ() -> None:
    probabilities = np.tile(np.linspace(1, 0.1, 7), (2, 1))
    metrics = ranking_metrics(probabilities / probabilities.sum(1, keepdims=True), np.array([5, 6]), _labels(7))
    assert metrics["top1"] == 0 and metrics["top5"] == 0
    assert ranking_metrics(probabilities, np.array([4, 0]), _labels(7))["top5"] == 1.0


@pytest.mark.parametrize(("features", "lateral"), [(["hypertelorism", "long philtrum"], False),
                                                   (["unilateral ptosis"], True),
                                                   (["facial asymmetry"], True),
                                                   (["upright bright eyes"], False),
                                                   (["cleft lip on the left"], True)])
def test_flip_is_disabled_for_one_sided_features(features: list[str], lateral: bool) -> None:
    info = DatasetInfo(folder=Path("."), format="gestaltlens-synth/1", seed=0, labels=(), detection_rate=1.0,
                       counts={}, raw={"classes": [{"id": "a", "features": features, "description": ""}]})
    assert _has_lateral_features(info) is lateral
