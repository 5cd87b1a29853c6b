"""Statistics of map ratings: means with bootstrap intervals, distributions, region shares, Krippendorff's alpha.

Pure functions over plain values (no database, no web): the results page, the summary API and the tests
all call the same code, and a researcher can rerun it on the CSV export.

Choices, stated once:

* **Bootstrap unit = case.** Ratings of one case are not independent (every rater looks at the same photo
  and, per method, the same map), so resampling single ratings would give intervals that are too narrow.
  The interval resamples *cases* with replacement (a cluster bootstrap) and recomputes the mean over all
  ratings of the drawn cases; with one case there is nothing to resample and no interval is given.
  Percentile interval, 2000 resamples, fixed seed: the same ratings always give the same numbers.
* **Alpha items = maps.** Krippendorff's alpha (ordinal, 1–5) treats each map (explanation) as a unit and
  each rater as an observer (reliability data: raters × maps, missing = not rated). It counts only maps
  rated by at least two raters; ``n_items`` and ``n_raters`` say how many stood behind the value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

SCORES: tuple[int, ...] = (1, 2, 3, 4, 5)
RESAMPLES = 2000
LEVEL = 0.95
SEED = 20240531


@dataclass(frozen=True)
class MeanCI:
    """A mean with its bootstrap interval (``low``/``high`` None, with ``reason``, when there is none)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    n_clusters: int
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "n_cases": self.n_clusters,
                "reason": self.reason}


@dataclass(frozen=True)
class Alpha:
    """Krippendorff's alpha with the raters and items (maps rated by ≥ 2 raters) behind it."""

    value: float | None
    n_raters: int
    n_items: int
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "n_raters": self.n_raters, "n_items": self.n_items, "reason": self.reason}


@dataclass(frozen=True)
class RatingPoint:
    """One (latest) rating as the statistics see it."""

    rater: Hashable
    item: Hashable  # the map (explanation id)
    case: Hashable
    method: str
    score: int
    regions: tuple[str, ...] = ()
    context: bool = False


@dataclass
class MethodSummary:
    method: str
    n: int
    mean: MeanCI
    distribution: dict[int, int]
    regions: dict[str, dict[str, float | int]]
    context_share: float | None
    alpha: Alpha
    n_raters: int = 0
    n_cases: int = 0
    n_maps: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "n": self.n,
            "n_raters": self.n_raters,
            "n_cases": self.n_cases,
            "n_maps": self.n_maps,
            "mean": self.mean.mean,
            "ci": [self.mean.low, self.mean.high] if self.mean.low is not None else None,
            "ci_reason": self.mean.reason,
            "distribution": {str(score): count for score, count in self.distribution.items()},
            "regions": self.regions,
            "context_share": self.context_share,
            "alpha": self.alpha.to_dict(),
        }


@dataclass
class Summary:
    methods: list[MethodSummary] = field(default_factory=list)
    alpha: Alpha = field(default_factory=lambda: Alpha(None, 0, 0, "no ratings"))
    n_ratings: int = 0
    n_raters: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "n_ratings": self.n_ratings,
            "n_raters": self.n_raters,
            "alpha": self.alpha.to_dict(),
            "bootstrap": {"unit": "case", "resamples": RESAMPLES, "level": LEVEL, "seed": SEED,
                          "interval": "percentile"},
            "methods": [m.to_dict() for m in self.methods],
        }


def bootstrap_mean_ci(
    scores: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> MeanCI:
    """Mean of ``scores`` and its percentile bootstrap interval.

    With ``clusters`` (one label per score, e.g. the case) whole clusters are resampled; without, single
    scores are. Fewer than two scores or clusters: the mean alone, with the reason.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError("scores must be one-dimensional")
    n = int(values.size)
    if n == 0:
        return MeanCI(None, None, None, 0, 0, "no ratings")
    if not 0.0 < level < 1.0:
        raise ValueError("level must lie between 0 and 1")
    mean = float(values.mean())
    if clusters is None:
        sums, counts = values, np.ones(n)
    else:
        if len(clusters) != n:
            raise ValueError("one cluster label per score")
        index: dict[Hashable, int] = {}
        labels = np.array([index.setdefault(c, len(index)) for c in clusters])
        sums = np.bincount(labels, weights=values)
        counts = np.bincount(labels).astype(np.float64)
    k = int(sums.size)
    if k < 2:
        unit = "case" if clusters is not None else "rating"
        return MeanCI(mean, None, None, n, k, f"one {unit}: no interval")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(resamples, k))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # Rounding noise must not put the mean outside its own interval.
    return MeanCI(mean, float(min(low, mean)), float(max(high, mean)), n, k)


def score_distribution(scores: Iterable[int]) -> dict[int, int]:
    """Counts of each score 1..5 (every score present, zero when unused)."""
    counts = Counter(int(s) for s in scores)
    stray = set(counts) - set(SCORES)
    if stray:
        raise ValueError(f"scores outside 1..5: {sorted(stray)}")
    return {score: counts.get(score, 0) for score in SCORES}


def region_frequencies(region_lists: Sequence[Iterable[str]], vocabulary: Sequence[str]) -> dict[str, dict]:
    """For each region of the vocabulary: how many ratings named it, and the share of all ratings."""
    total = len(region_lists)
    counts = Counter(region for regions in region_lists for region in set(regions))
    return {region: {"count": counts.get(region, 0), "share": (counts.get(region, 0) / total) if total else None}
            for region in vocabulary}


def share(flags: Sequence[bool]) -> float | None:
    return (sum(1 for flag in flags if flag) / len(flags)) if flags else None


def reliability_matrix(points: Iterable[RatingPoint]) -> tuple[np.ndarray, list[Hashable], list[Hashable]]:
    """Raters × items matrix of scores (NaN = not rated), in first-seen order of raters and items.

    A rater with two scores for one item would be a bug upstream (only the latest rating counts).
    """
    raters: dict[Hashable, int] = {}
    items: dict[Hashable, int] = {}
    cells: dict[tuple[int, int], float] = {}
    for point in points:
        key = (raters.setdefault(point.rater, len(raters)), items.setdefault(point.item, len(items)))
        if key in cells:
            raise ValueError(f"rater {point.rater!r} rated item {point.item!r} twice")
        cells[key] = float(point.score)
    matrix = np.full((len(raters), len(items)), np.nan)
    for (r, i), value in cells.items():
        matrix[r, i] = value
    return matrix, list(raters), list(items)


def ordinal_alpha(matrix: np.ndarray) -> Alpha:
    """Krippendorff's alpha (ordinal, values 1..5) of a raters × items matrix with NaN for missing."""
    import krippendorff

    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError("reliability data must be raters × items")
    raters_with_ratings = int((~np.isnan(data)).any(axis=1).sum())
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    data = data[:, pairable]
    active = (~np.isnan(data)).any(axis=1)
    n_raters, n_items = int(active.sum()), int(pairable.sum())
    if raters_with_ratings < 2:
        return Alpha(None, raters_with_ratings, n_items, "needs at least 2 raters")
    if n_items < 1:
        return Alpha(None, n_raters, n_items, "no map was rated by 2 or more raters")
    values = data[~np.isnan(data)]
    if np.unique(values).size < 2:
        return Alpha(None, n_raters, n_items,
                     "every rating has the same score: agreement cannot be told from chance")
    value = float(krippendorff.alpha(reliability_data=data[active], level_of_measurement="ordinal",
                                     value_domain=list(SCORES)))
    if math.isnan(value):
        return Alpha(None, n_raters, n_items, "undefined for these ratings")
    return Alpha(value, n_raters, n_items)


def points_alpha(points: Iterable[RatingPoint]) -> Alpha:
    matrix, _, _ = reliability_matrix(points)
    return ordinal_alpha(matrix)


def summarise(points: Sequence[RatingPoint], *, methods: Sequence[str], regions: Sequence[str]) -> Summary:
    """Everything the results page shows, per method in ``methods`` order (methods without ratings too)."""
    summary = Summary(n_ratings=len(points), n_raters=len({p.rater for p in points}),
                      alpha=points_alpha(points))
    order = list(dict.fromkeys([*methods, *sorted({p.method for p in points} - set(methods))]))
    for method in order:
        mine = [p for p in points if p.method == method]
        summary.methods.append(MethodSummary(
            method=method,
            n=len(mine),
            mean=bootstrap_mean_ci([p.score for p in mine], [p.case for p in mine]),
            distribution=score_distribution(p.score for p in mine),
            regions=region_frequencies([p.regions for p in mine], regions),
            context_share=share([p.context for p in mine]),
            alpha=points_alpha(mine),
            n_raters=len({p.rater for p in mine}),
            n_cases=len({p.case for p in mine}),
            n_maps=len({p.item for p in mine}),
        ))
    return summary
