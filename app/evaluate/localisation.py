"""Localisation of attribution maps on a ground-truth mask, with the chance levels every number needs.

Why these three metrics: the synthetic generator knows exactly which pixels a syndrome changed, so a map can
be scored like a detector (CLEVR-XAI, Arras et al. 2022; the pointing game of Zhang et al. 2018):

* **pointing game**: is the map's single most relevant pixel on the feature (within ``tolerance`` pixels of
  the mask)? A yes/no per map; the chance level is the share of the image the tolerance-dilated mask covers.
* **relevance mass accuracy**: the share of the map's positive relevance that falls inside the mask.
* **relevance rank accuracy**: of the ``K`` most relevant pixels (``K`` = mask size), the share inside it.

Only *positive* relevance (evidence for the target) counts, as in CLEVR-XAI: for a signed map, negative
values are evidence against and say nothing about where the feature is. Magnitude maps are all positive.

Chance levels: a map with no information about the mask scores the mask's area share in expectation on mass
and rank accuracy (and the dilated area share on the pointing game); :func:`centre_prior` is a stronger
control, a centred Gaussian, because features of aligned faces sit near the middle of the crop. A method
that cannot beat the control has shown no localisation.

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
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "score_map",
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


def centre_prior(size: int = 112, sigma_fraction: float = 0.25) -> np.ndarray:
    """A centred isotropic Gaussian (σ = ``sigma_fraction`` × size): the control map a method must beat."""
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sigma = sigma_fraction * size
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

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def score_map(attribution: np.ndarray, mask: np.ndarray, tolerance: int = DEFAULT_TOLERANCE_PX) -> LocalisationScores:
    """Every localisation score of one map, beside the mask's chance levels."""
    return LocalisationScores(
        pointing=pointing_game(attribution, mask, tolerance),
        mass=relevance_mass_accuracy(attribution, mask),
        rank=relevance_rank_accuracy(attribution, mask),
        area_share=area_share(mask),
        pointing_chance=area_share(dilate(mask, tolerance)),
        tolerance_px=int(tolerance),
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
