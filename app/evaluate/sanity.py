"""Model-parameter randomisation sanity checks (Adebayo et al., NeurIPS 2018).

Why: a map that looks the same when the network's learnt weights are replaced by random ones cannot be
explaining what the network learnt; it shows the image (edges) instead. Adebayo et al. found guided
backprop nearly invariant to randomisation, and Grad-CAM and gradients sensitive to it.

*Cascading* randomisation re-initialises the network from the head down to the stem, one stage at a time
and cumulatively (head + embedding, then layer4, layer3, layer2, layer1, stem), and compares each map with
the original model's map of the same face by three similarities of the maps' magnitudes:
Spearman rank correlation of ``|map|``, SSIM of ``|map|`` scaled to [0, 1], and the Pearson correlation of
their HOG descriptors. The reference line is the *between-faces* similarity of the original model (the map
of one face against the map of another face, same method): a randomised map that still resembles the
original more than another face's map does has not changed in any way that matters.

Verdict (one rule for every method): a method *passes* when, with the head randomised (the classifier and
the embedding layers, the part of the network that decides the class), the mean Spearman similarity of its
maps to the original ones is below ``PASS_BELOW`` = 0.5; a map that keeps more than half of its rank
structure when the learnt decision is replaced by a random one mostly shows the image, not the model. The
threshold was set by reading the demo model's cascade (guided backprop 0.75, deconvolution 0.57, gradient
methods 0.38–0.47, Grad-CAM 0.16 on 8 faces), so it is a stated convention, not a statistical test; the
full cascade and the between-faces reference are reported beside it so the reader can judge.
Re-initialisation uses each module's own ``reset_parameters`` under a seed, so it is reproducible.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from app.evaluate.localisation import Interval, bootstrap_ci

__all__ = [
    "CASCADE",
    "MethodSanity",
    "cascading_randomisation",
    "hog_similarity",
    "similarities",
    "spearman_abs",
    "ssim_abs",
    "summarise_sanity",
]

#: Stages in cascade order (from the output back to the input) and the iResNet modules of each.
CASCADE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("head", ("head", "features", "fc", "bn2")),
    ("layer4", ("layer4",)),
    ("layer3", ("layer3",)),
    ("layer2", ("layer2",)),
    ("layer1", ("layer1",)),
    ("stem", ("conv1", "bn1", "prelu")),
)
#: The verdict is read after this many stages (the head), against this Spearman similarity.
VERDICT_STAGE = 1
PASS_BELOW = 0.5
METRICS = ("spearman", "ssim", "hog")


def _reset(module: nn.Module, seed: int) -> None:
    for index, sub in enumerate(module.modules()):
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            torch.manual_seed(seed * 1000 + index)
            reset()
        if isinstance(sub, nn.PReLU):
            nn.init.constant_(sub.weight, 0.25)


def cascading_randomisation(network: nn.Module, *, seed: int = 0,
                            stages: Sequence[tuple[str, tuple[str, ...]]] = CASCADE) -> Iterator[tuple[str, nn.Module]]:
    """Yield (stage name, network copy with that stage and every stage above it re-initialised), in order.

    The given network is never changed (each copy is a deep copy, in eval mode).
    """
    current = copy.deepcopy(network).eval()
    for stage_index, (name, modules) in enumerate(stages):
        for module_name in modules:
            _reset(current.get_submodule(module_name), seed + stage_index)
        current.eval()
        yield name, copy.deepcopy(current)


def _magnitude(a: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.float64))


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of |a| and |b| (0 when either is constant)."""
    x, y = _magnitude(a).ravel(), _magnitude(b).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def _unit(a: np.ndarray) -> np.ndarray:
    m = _magnitude(a)
    top = m.max()
    return m / top if top > 0 else m


def ssim_abs(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of |a| and |b|, each scaled to [0, 1] by its maximum (Adebayo et al.'s normalisation)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_unit(a), _unit(b), data_range=1.0))


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the HOG descriptors of |a| and |b| (8-px cells, 9 orientations)."""
    from skimage.feature import hog

    ha = hog(_unit(a), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)
    hb = hog(_unit(b), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)
    if ha.std() == 0 or hb.std() == 0:
        return 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def similarities(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {"spearman": spearman_abs(a, b), "ssim": ssim_abs(a, b), "hog": hog_similarity(a, b)}


@dataclass(frozen=True)
class MethodSanity:
    """One method's cascade: per stage and metric the mean similarity (with CI) to the original maps."""

    method: str
    stages: tuple[str, ...]
    per_stage: dict[str, dict[str, Interval]]  # stage → metric → interval over faces
    reference: dict[str, Interval]  # metric → between-faces similarity of the original model
    passes: bool
    verdict_stage: str

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method, "stages": list(self.stages), "passes": self.passes,
            "verdict_stage": self.verdict_stage,
            "per_stage": {s: {m: i.to_dict() for m, i in v.items()} for s, v in self.per_stage.items()},
            "reference": {m: i.to_dict() for m, i in self.reference.items()},
        }


def between_faces(maps: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Similarities of each face's map to the next face's map (a ring: n pairs for n faces)."""
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    if len(maps) < 2:
        return out
    for i in range(len(maps)):
        for metric, value in similarities(maps[i], maps[(i + 1) % len(maps)]).items():
            out[metric].append(value)
    return out


def summarise_sanity(method: str, original: Sequence[np.ndarray],
                     randomised: dict[str, Sequence[np.ndarray]], *, seed: int = 0) -> MethodSanity:
    """Compare each stage's maps with the original ones (same faces, same order) and give the verdict."""
    if len(original) < 2:
        raise ValueError("sanity checks need at least two faces (the between-faces reference)")
    per_stage = {}
    for stage, maps in randomised.items():
        values: dict[str, list[float]] = {m: [] for m in METRICS}
        for a, b in zip(original, maps, strict=True):
            for metric, value in similarities(a, b).items():
                values[metric].append(value)
        per_stage[stage] = {m: bootstrap_ci(v, seed=seed) for m, v in values.items()}
    reference = {m: bootstrap_ci(v, seed=seed) for m, v in between_faces(original).items()}
    stages = tuple(randomised)
    verdict_stage = stages[min(VERDICT_STAGE, len(stages)) - 1]
    passes = per_stage[verdict_stage]["spearman"].mean < PASS_BELOW
    return MethodSanity(method=method, stages=stages, per_stage=per_stage, reference=reference, passes=passes,
                        verdict_stage=verdict_stage)


def run_sanity(explain: Callable[[nn.Module, np.ndarray, int], dict[str, np.ndarray]], network: nn.Module,
               crops: Sequence[np.ndarray], targets: Sequence[int], methods: Sequence[str], *, seed: int = 0,
               progress: Callable[[float], None] | None = None) -> dict[str, MethodSanity]:
    """The cascade for every method: ``explain(network, crop, target)`` → maps keyed by method id."""
    original = [explain(network, crop, target) for crop, target in zip(crops, targets, strict=True)]
    randomised: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in methods}
    for done, (stage, random_net) in enumerate(cascading_randomisation(network, seed=seed)):
        for k, (crop, target) in enumerate(zip(crops, targets, strict=True)):
            maps = explain(random_net, crop, target)
            for m in methods:
                randomised[m].setdefault(stage, []).append(maps[m])
            if progress is not None:  # per face: a job's progress writes are its heartbeat
                progress((done + (k + 1) / len(crops)) / len(CASCADE))
    return {m: summarise_sanity(m, [o[m] for o in original], randomised[m], seed=seed) for m in methods}
