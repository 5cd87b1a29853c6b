"""Localisation of attribution maps on a ground-truth mask, with the chance levels every number needs.

Why these three metrics: the synthetic generator knows exactly which pixels a syndrome changed, so a map can
be scored like a detector (CLEVR-XAI, Arras et al. 2022; the pointing game of Zhang et al. 2018):

* **pointing game**: is the map's single most relevant pixel on the feature (within ``tolerance`` pixels of
  the mask)? A yes/no per map; the chance level is the share of the image the tolerance-dilated mask covers.
* **relevance mass accuracy**: the share of the map's positive relevance that falls inside the mask.
* **relevance rank accuracy**: of the ``K`` most relevant pixels (``K`` = mask size), the share inside it.

Only *positive* relevance (evidence for the target) counts, as in CLEVR-XAI: for a signed map, negative
values are evidence against and say nothing about where the feature is. Magnitude maps are all positive.

Two more, as Quantus defines them (``TopKIntersection``, ``AUC``):

* **top-k intersection**: of the ``k`` most relevant pixels (k = 1000, Quantus' default, ≈ 8 % of the crop),
  the share inside the mask (Theiner et al. 2022); chance: the mask's area share;
* **ROC-AUC**: the map's values as a score of "this pixel is in the mask" (Mann–Whitney, ties count half);
  chance: 0.5.

Chance levels: a map with no information about the mask scores the mask's area share in expectation on mass
and rank accuracy (and the dilated area share on the pointing game); :func:`centre_prior` is a stronger
control, a centred Gaussian, because features of aligned faces sit near the middle of the crop. A method
that cannot beat the control has shown no localisation. The control's width is not chosen by hand:
:func:`fit_centre_prior` picks the σ that maximises its relevance mass on a held-out half of the benchmark
(the *strongest* centre prior there), and the other half is scored against it.

Arrays in, floats and dataclasses out: no torch, no web layer, no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "DEFAULT_TOLERANCE_PX",
    "Interval",
    "LocalisationScores",
    "area_share",
    "bootstrap_ci",
    "centre_prior",
    "dilate",
    "fit_centre_prior",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "roc_auc",
    "score_map",
    "top_k_intersection",
]

#: Pointing-game tolerance on the 112×112 crop. Zhang et al. used 15 px on ~224 px images; 4 px here is
#: about the width of an eyelid or a lip line, so a hit means "on the feature", not "in its neighbourhood".
DEFAULT_TOLERANCE_PX = 4


def _check(attribution: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    attribution = np.asarray(attribution, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if attribution.ndim != 2 or attribution.shape != mask.shape:
        raise ValueError(f"map {attribution.shape} and mask {mask.shape} must be 2-D and of one shape")
    if not np.isfinite(attribution).all():
        raise ValueError("the map has non-finite values")
    if not mask.any():
        raise ValueError("the mask is empty: localisation is undefined without a ground-truth region")
    return attribution, mask


def dilate(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """``mask`` grown by ``tolerance`` pixels (Euclidean disc), the pointing game's target area."""
    mask = np.asarray(mask).astype(bool)
    if tolerance <= 0:
        return mask
    distance = ndimage.distance_transform_edt(~mask)
    return distance <= tolerance


def area_share(mask: np.ndarray) -> float:
    """Share of the image the mask covers: the expected mass / rank accuracy of an uninformed map."""
    mask = np.asarray(mask).astype(bool)
    return float(mask.mean())


def pointing_game(attribution: np.ndarray, mask: np.ndarray, tolerance: int = DEFAULT_TOLERANCE_PX) -> float:
    """1.0 when the map's maximum (the first, in row-major order, among equal maxima) lies within
    ``tolerance`` pixels of the mask, else 0.0. A flat map (no maximum) scores 0."""
    attribution, mask = _check(attribution, mask)
    if attribution.max() == attribution.min():
        return 0.0
    y, x = np.unravel_index(int(np.argmax(attribution)), attribution.shape)
    return float(dilate(mask, tolerance)[y, x])


def relevance_mass_accuracy(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Positive relevance inside the mask / all positive relevance (0 for a map with none)."""
    attribution, mask = _check(attribution, mask)
    positive = np.clip(attribution, 0.0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else 0.0


def relevance_rank_accuracy(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the ``K = |mask|`` highest-ranked pixels that lie in the mask.

    Ties at the K-th value are shared out fractionally (each tied pixel counts with the weight of the places
    left), so the score of a map does not depend on an arbitrary order of equal values.
    """
    attribution, mask = _check(attribution, mask)
    values = attribution.ravel()
    inside = mask.ravel()
    k = int(inside.sum())
    kth = np.partition(values, values.size - k)[values.size - k]
    above = values > kth
    tied = values == kth
    places_left = k - int(above.sum())
    hits = float(inside[above].sum()) + places_left * float(inside[tied].sum()) / max(1, int(tied.sum()))
    return hits / k


#: Default k of top-k intersection (Quantus' default).
TOP_K = 1000


def top_k_intersection(attribution: np.ndarray, mask: np.ndarray, k: int = TOP_K) -> float:
    """Share of the ``k`` highest-valued pixels that lie in the mask (ties: the stable order of a descending sort)."""
    attribution, mask = _check(attribution, mask)
    k = max(1, min(int(k), attribution.size))
    top = np.argsort(-attribution.ravel(), kind="stable")[:k]
    return float(mask.ravel()[top].mean())


def roc_auc(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of the map's values as a detector of mask pixels (ties count half)."""
    from scipy.stats import rankdata

    attribution, mask = _check(attribution, mask)
    inside = mask.ravel()
    positives, negatives = int(inside.sum()), int((~inside).sum())
    if negatives == 0:
        raise ValueError("the mask covers the whole crop: ROC-AUC is undefined")
    ranks = rankdata(attribution.ravel())
    return float((ranks[inside].sum() - positives * (positives + 1) / 2) / (positives * negatives))


#: Widths (σ, pixels) the centre-prior control is fitted over.
PRIOR_SIGMAS: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0, 28.0, 36.0, 48.0)


def fit_centre_prior(masks: Sequence[np.ndarray], sigmas: Sequence[float] = PRIOR_SIGMAS,
                     size: int = 112) -> tuple[float, dict[float, float]]:
    """The σ (pixels) whose centre prior has the highest mean relevance mass on ``masks``, and every σ's mass.

    Fitted on one half of the benchmark and scored on the other, so the control is the strongest centre
    prior a method could have been compared with, without being tuned on the faces it is scored on.
    """
    if not masks:
        raise ValueError("no masks to fit the centre prior on")
    means = {float(s): float(np.mean([relevance_mass_accuracy(centre_prior(size, sigma_px=s), m) for m in masks]))
             for s in sigmas}
    best = max(means, key=lambda s: (means[s], -s))
    return best, means


def centre_prior(size: int = 112, sigma_fraction: float = 0.25, *, sigma_px: float | None = None) -> np.ndarray:
    """A centred isotropic Gaussian (σ = ``sigma_px``, or ``sigma_fraction`` × size): the control a method must
    beat."""
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sigma = float(sigma_px) if sigma_px is not None else sigma_fraction * size
    return np.exp(-((xs - centre) ** 2 + (ys - centre) ** 2) / (2 * sigma**2)).astype(np.float32)


@dataclass(frozen=True)
class LocalisationScores:
    """The three localisation scores of one map against one mask, with that mask's chance levels."""

    pointing: float
    mass: float
    rank: float
    area_share: float  # chance level of mass and rank accuracy
    pointing_chance: float  # area share of the tolerance-dilated mask
    tolerance_px: int
    top_k: float = float("nan")  # top-k intersection (chance: area share)
    auc: float = float("nan")  # ROC-AUC against the mask (chance: 0.5)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def score_map(attribution: np.ndarray, mask: np.ndarray, tolerance: int = DEFAULT_TOLERANCE_PX,
              k: int = TOP_K) -> LocalisationScores:
    """Every localisation score of one map, beside the mask's chance levels."""
    return LocalisationScores(
        pointing=pointing_game(attribution, mask, tolerance),
        mass=relevance_mass_accuracy(attribution, mask),
        rank=relevance_rank_accuracy(attribution, mask),
        area_share=area_share(mask),
        pointing_chance=area_share(dilate(mask, tolerance)),
        tolerance_px=int(tolerance),
        top_k=top_k_intersection(attribution, mask, k),
        auc=roc_auc(attribution, mask),
    )


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile bootstrap interval (resampling the given units, e.g. faces)."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> Interval:
    """Mean of ``values`` with a seeded percentile bootstrap interval (one value: the interval is a point)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("no values to summarise")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(data.mean())
    if data.size == 1:
        return Interval(mean=mean, low=mean, high=mean, n=1)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean=mean, low=float(low), high=float(high), n=int(data.size))
