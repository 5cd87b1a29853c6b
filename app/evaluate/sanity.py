"""Sanity checks of attribution methods: model-parameter randomisation (Adebayo et al., NeurIPS 2018) and the
random-logit test (Sixt et al., ICML 2020).

Why: a map that looks the same when the network's learnt weights are replaced by random ones cannot be
explaining what the network learnt; it shows the image (edges) instead. Adebayo et al. found guided
backprop nearly invariant to randomisation, and Grad-CAM and gradients sensitive to it. Sixt et al. showed
that many modified-backprop methods give nearly the same map whatever class they explain.

Three tests, each comparing a changed map with the original model's map of the same face:

* *cascading* randomisation re-initialises the network from the output back to the input, one stage at a
  time and cumulatively: the classifier (``head``) alone, then the embedding layers (``fc``, ``features``,
  ``bn2``), then layer4, layer3, layer2, layer1 and the stem;
* *independent* randomisation re-initialises one stage at a time, every other stage keeping its weights
  (Adebayo et al.'s second variant: which stage does the map depend on?);
* *random logit*: the map of a random other class of the same face (same model).

Similarities of the maps' magnitudes: Spearman rank correlation of ``|map|``, SSIM of ``|map|`` scaled to
[0, 1] by its maximum, and the Pearson correlation of their HOG descriptors.

**The verdict is a comparison with the reference line, with its uncertainty.** The reference is the
*between-faces* similarity of the original model: for face *i*, the mean similarity of its map to the
other faces' maps (same method). A changed map that is no more like the original than another face's map
is has changed as much as anything can. For each face the *margin* is (similarity of the changed map to
the original) − (the face's between-faces similarity); a stage **fails** when the 95 % bootstrap interval
of the mean margin over faces (expanded for few faces, :func:`expanded_level`) lies entirely above 0, i.e.
the changed maps are reliably more alike to the originals than another face's map is. It also fails when
randomisation did not change the maps at all (every similarity ≥ ``UNCHANGED`` = 0.999: a map independent
of the weights, even one that is the same for every face and so has no margin).
Otherwise it passes, and the interval says how clearly.
The method's verdict is the cascade's at ``VERDICT_STAGE`` (classifier and embedding layers randomised,
the part of the network that decides the class); every other stage, the independent stages and the random
logit carry their own verdicts beside it.

Re-initialisation draws from a ``torch.Generator`` seeded per stage, never from the process-wide generator,
so it is reproducible and leaves every other user of torch's random numbers alone. A stage gets the same
random weights in the cascade and in the independent test.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats
from torch import nn

from app.evaluate.localisation import Interval, bootstrap_ci

__all__ = [
    "CASCADE",
    "UNCHANGED",
    "VERDICT_STAGE",
    "MethodSanity",
    "StageVerdict",
    "between_faces",
    "cascading_randomisation",
    "compare_stage",
    "expanded_level",
    "hog_similarity",
    "independent_randomisation",
    "other_targets",
    "reinitialise",
    "run_sanity",
    "similarities",
    "spearman_abs",
    "ssim_abs",
    "summarise_sanity",
]

#: Stages from the output back to the input and the iResNet modules of each.
CASCADE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("classifier", ("head",)),
    ("embedding", ("features", "fc", "bn2")),
    ("layer4", ("layer4",)),
    ("layer3", ("layer3",)),
    ("layer2", ("layer2",)),
    ("layer1", ("layer1",)),
    ("stem", ("conv1", "bn1", "prelu")),
)
#: The method's verdict is the cascade's after this stage (classifier + embedding layers randomised).
VERDICT_STAGE = "embedding"
#: A similarity at or above this for every face means randomisation did not change the map at all.
UNCHANGED = 0.999
METRICS = ("spearman", "ssim", "hog")
#: The metric the verdict reads (the other two are reported beside it).
VERDICT_METRIC = "spearman"


def _generator(seed: int, stage_index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1009 + stage_index)


@torch.no_grad()
def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``module`` from ``generator`` (never torch's global generator).

    Convolutions and linear layers as PyTorch's own ``reset_parameters`` does (Kaiming-uniform weights with
    a = √5, uniform biases within 1/√fan_in); normalisation layers to identity with fresh running
    statistics; PReLU slopes to 0.25 (their default; a constant draws no random numbers).
    """
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            if sub.bias is not None:
                fan_in = sub.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(sub.bias, -bound, bound, generator=generator)
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.reset_parameters()  # ones, zeros and reset running statistics: no random numbers
        elif isinstance(sub, nn.PReLU):
            nn.init.constant_(sub.weight, 0.25)


def cascading_randomisation(network: nn.Module, *, seed: int = 0,
                            stages: Sequence[tuple[str, tuple[str, ...]]] = CASCADE) -> Iterator[tuple[str, nn.Module]]:
    """Yield (stage name, network copy with that stage and every stage above it re-initialised), in order.

    The given network is never changed (each copy is a deep copy, in eval mode).
    """
    current = copy.deepcopy(network).eval()
    for stage_index, (name, modules) in enumerate(stages):
        generator = _generator(seed, stage_index)
        for module_name in modules:
            reinitialise(current.get_submodule(module_name), generator)
        yield name, copy.deepcopy(current).eval()


def independent_randomisation(network: nn.Module, *, seed: int = 0,
                              stages: Sequence[tuple[str, tuple[str, ...]]] = CASCADE
                              ) -> Iterator[tuple[str, nn.Module]]:
    """Yield (stage name, network copy with only that stage re-initialised), with the cascade's random weights.

    The first stage alone is the cascade's first network, so callers may skip it.
    """
    for stage_index, (name, modules) in enumerate(stages):
        current = copy.deepcopy(network).eval()
        generator = _generator(seed, stage_index)
        for module_name in modules:
            reinitialise(current.get_submodule(module_name), generator)
        yield name, current


def other_targets(targets: Sequence[int], num_classes: int, *, seed: int = 0) -> list[int]:
    """For each target a uniformly drawn other class (the random-logit test), from a seeded numpy generator."""
    if num_classes < 2:
        raise ValueError("the random-logit test needs at least two classes")
    rng = np.random.default_rng(seed)
    out = []
    for target in targets:
        choice = int(rng.integers(0, num_classes - 1))
        out.append(choice + 1 if choice >= target else choice)
    return out


def _magnitude(a: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.float64))


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of |a| and |b| (0 when either is constant)."""
    x, y = _magnitude(a).ravel(), _magnitude(b).ravel()
    if x.std() == 0 or y.std() == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
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
        return 1.0 if np.array_equal(ha, hb) else 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def similarities(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {"spearman": spearman_abs(a, b), "ssim": ssim_abs(a, b), "hog": hog_similarity(a, b)}


def between_faces(maps: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Per face, the mean similarity of its map to every other face's map (the reference line, per face)."""
    n = len(maps)
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    if n < 2:
        return out
    pair: dict[tuple[int, int], dict[str, float]] = {}
    for i in range(n):
        for j in range(i + 1, n):
            pair[(i, j)] = similarities(maps[i], maps[j])
    for i in range(n):
        others = [pair[(min(i, j), max(i, j))] for j in range(n) if j != i]
        for metric in METRICS:
            out[metric].append(float(np.mean([o[metric] for o in others])))
    return out


@dataclass(frozen=True)
class StageVerdict:
    """One changed network (or class): similarity to the original maps, its margin over the reference, verdict."""

    similarity: dict[str, Interval]  # metric → mean similarity over faces (with interval)
    margin: Interval  # VERDICT_METRIC similarity − between-faces similarity, paired per face
    fails: bool
    unchanged: bool  # every face's map kept (similarity ≥ UNCHANGED)

    def to_dict(self) -> dict[str, object]:
        return {"similarity": {m: i.to_dict() for m, i in self.similarity.items()}, "margin": self.margin.to_dict(),
                "fails": self.fails, "unchanged": self.unchanged}


def expanded_level(n: int, level: float = 0.95) -> float:
    """The percentile level that makes a bootstrap interval of ``n`` values an *expanded* one (Hesterberg 2015).

    A plain percentile bootstrap of a mean over a handful of faces is too narrow (it ignores the t distribution
    and the n/(n−1) variance bias): with 6 faces of pure noise it "finds" a margin in about 1 stage of 8.
    The expanded interval reads the bootstrap quantiles at the level whose normal quantile is
    √(n/(n−1)) · t(n−1), which restores the nominal coverage; for many faces it tends to ``level``.
    """
    from scipy.stats import norm, t

    if n < 2:
        return level
    z = math.sqrt(n / (n - 1)) * t.ppf(1 - (1 - level) / 2, n - 1)
    return float(min(0.9995, 1 - 2 * norm.sf(z)))


def compare_stage(original: Sequence[np.ndarray], changed: Sequence[np.ndarray], reference: dict[str, list[float]],
                  *, seed: int = 0) -> StageVerdict:
    """The verdict of one stage: fails when the margin's interval is above 0 or the maps did not change."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for a, b in zip(original, changed, strict=True):
        for metric, value in similarities(a, b).items():
            values[metric].append(value)
    margin = np.asarray(values[VERDICT_METRIC]) - np.asarray(reference[VERDICT_METRIC])
    margin_ci = bootstrap_ci(margin, seed=seed, level=expanded_level(len(margin)))
    unchanged = bool(np.min(values[VERDICT_METRIC]) >= UNCHANGED)
    return StageVerdict(similarity={m: bootstrap_ci(v, seed=seed) for m, v in values.items()}, margin=margin_ci,
                        fails=bool(margin_ci.low > 0 or unchanged), unchanged=unchanged)


@dataclass(frozen=True)
class MethodSanity:
    """One method's sanity checks: cascade, independent stages and random logit, each with its verdict."""

    method: str
    reference: dict[str, Interval]  # metric → between-faces similarity of the original model
    cascade: dict[str, StageVerdict]
    independent: dict[str, StageVerdict] = field(default_factory=dict)
    random_logit: StageVerdict | None = None
    verdict_stage: str = VERDICT_STAGE

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.cascade)

    @property
    def passes(self) -> bool:
        return not self.cascade[self.verdict_stage].fails

    @property
    def per_stage(self) -> dict[str, dict[str, Interval]]:
        return {stage: v.similarity for stage, v in self.cascade.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method, "stages": list(self.stages), "passes": self.passes,
            "verdict_stage": self.verdict_stage, "verdict_metric": VERDICT_METRIC,
            "margin": self.cascade[self.verdict_stage].margin.to_dict(),
            "per_stage": {s: {m: i.to_dict() for m, i in v.items()} for s, v in self.per_stage.items()},
            "cascade": {s: v.to_dict() for s, v in self.cascade.items()},
            "independent": {s: v.to_dict() for s, v in self.independent.items()},
            "random_logit": None if self.random_logit is None else self.random_logit.to_dict(),
            "reference": {m: i.to_dict() for m, i in self.reference.items()},
        }


def summarise_sanity(method: str, original: Sequence[np.ndarray], randomised: dict[str, Sequence[np.ndarray]], *,
                     independent: dict[str, Sequence[np.ndarray]] | None = None,
                     random_logit: Sequence[np.ndarray] | None = None, seed: int = 0,
                     verdict_stage: str = VERDICT_STAGE) -> MethodSanity:
    """Compare each changed set of maps with the original ones (same faces, same order) and give the verdicts."""
    if len(original) < 2:
        raise ValueError("sanity checks need at least two faces (the between-faces reference)")
    reference = between_faces(original)
    cascade = {stage: compare_stage(original, maps, reference, seed=seed) for stage, maps in randomised.items()}
    if verdict_stage not in cascade:
        verdict_stage = list(cascade)[-1]
    return MethodSanity(
        method=method, reference={m: bootstrap_ci(v, seed=seed) for m, v in reference.items()}, cascade=cascade,
        independent={s: compare_stage(original, maps, reference, seed=seed) for s, maps in (independent or {}).items()},
        random_logit=None if random_logit is None else compare_stage(original, random_logit, reference, seed=seed),
        verdict_stage=verdict_stage)


Explain = Callable[..., dict[str, np.ndarray]]  # (network, crop, target[, methods=]) → maps by method id


def run_sanity(explain: Explain, network: nn.Module, crops: Sequence[np.ndarray], targets: Sequence[int],
               methods: Sequence[str], *, original: Sequence[dict[str, np.ndarray]] | None = None,
               independent: bool = True, random_logit: bool = True, num_classes: int | None = None,
               independent_methods: Sequence[str] | None = None,
               seed: int = 0, progress: Callable[[float], None] | None = None) -> dict[str, MethodSanity]:
    """Every test for every method: ``explain(network, crop, target)`` → maps keyed by method id.

    ``original`` (the original model's maps of these faces, in order) is reused when given: the scorecard has
    already computed them. ``independent_methods`` (default: all) limits the independent randomisation to
    those methods; ``explain`` is then called with ``methods=`` for the independent networks.
    """
    indep_methods = list(methods if independent_methods is None else
                         [m for m in methods if m in set(independent_methods)])
    crops, targets = list(crops), list(targets)
    if original is None:
        original = [explain(network, crop, target) for crop, target in zip(crops, targets, strict=True)]
    networks: list[tuple[str, str, nn.Module]] = [("cascade", s, n) for s, n in
                                                  cascading_randomisation(network, seed=seed)]
    if independent and indep_methods:  # the first stage alone is the cascade's first network: reused
        networks += [("independent", s, n) for i, (s, n) in
                     enumerate(independent_randomisation(network, seed=seed)) if i > 0]
    steps = len(networks) + (1 if random_logit else 0)
    changed: dict[str, dict[str, dict[str, list[np.ndarray]]]] = {
        m: {"cascade": {}, "independent": {}} for m in methods}
    for done, (test, stage, random_net) in enumerate(networks):
        wanted = indep_methods if test == "independent" else list(methods)
        for k, (crop, target) in enumerate(zip(crops, targets, strict=True)):
            maps = explain(random_net, crop, target, methods=wanted) if len(wanted) < len(methods) else \
                explain(random_net, crop, target)
            for m in wanted:
                changed[m][test].setdefault(stage, []).append(maps[m])
            if progress is not None:  # per face: a job's progress writes are its heartbeat
                progress((done + (k + 1) / len(crops)) / steps)
    logit_maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    if random_logit:
        classes = num_classes if num_classes is not None else int(network.num_classes)
        for k, (crop, other) in enumerate(zip(crops, other_targets(targets, classes, seed=seed), strict=True)):
            maps = explain(network, crop, other)
            for m in methods:
                logit_maps[m].append(maps[m])
            if progress is not None:
                progress((len(networks) + (k + 1) / len(crops)) / steps)
    first = CASCADE[0][0]
    results = {}
    for m in methods:
        indep = changed[m]["independent"]
        if independent and m in indep_methods:
            indep = {first: changed[m]["cascade"][first], **indep}
        results[m] = summarise_sanity(m, [o[m] for o in original], changed[m]["cascade"], independent=indep,
                                      random_logit=logit_maps[m] if random_logit else None, seed=seed)
    return results
