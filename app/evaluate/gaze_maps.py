"""Fixation density maps and the comparisons built on them: method vs group, group vs group, and the
inter-observer ceiling (leave one participant out), with bootstrap confidence intervals over cases.

All in aligned 112x112 coordinates, the space the attribution maps live in, so a map and the gaze on the same
face compare pixel by pixel. ML core: plain arrays and dataclasses, no database.

Why the σ default: the saliency benchmarks blur fixations by about one degree of visual angle (the fovea's
extent and the trackers' typical accuracy, 0.5–1°). At 60 cm on a 96 dpi screen, 1° is
``tan(1°) · 600 mm · 3.78 px/mm ≈ 39.6`` screen pixels; it is carried into aligned pixels by the size the photo
was shown at and the case's alignment scale. Labs give their own geometry when they know it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from app.evaluate.gaze import ALL_METRICS, Fixations, score_all

SIZE = 112


@dataclass(frozen=True)
class ViewingGeometry:
    """How the stimulus was seen: σ is ``angle_deg`` of visual angle at ``distance_cm`` on a screen with
    ``px_per_cm`` pixels per cm, the photo shown at ``screen_px_per_photo_px``."""

    angle_deg: float = 1.0
    distance_cm: float = 60.0
    px_per_cm: float = 96 / 2.54
    screen_px_per_photo_px: float = 1.0

    def sigma_screen_px(self) -> float:
        return math.tan(math.radians(self.angle_deg)) * self.distance_cm * self.px_per_cm

    def sigma_aligned_px(self, align_scale: float) -> float:
        """σ in aligned pixels, for a case whose photo → aligned transform scales by ``align_scale``."""
        return self.sigma_screen_px() / self.screen_px_per_photo_px * align_scale


def matrix_scale(matrix: Sequence[Sequence[float]]) -> float:
    """The isotropic scale of a 2x3 similarity matrix (square root of the 2x2 part's determinant)."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(math.sqrt(abs(np.linalg.det(m[:, :2]))))


def to_aligned(matrix: Sequence[Sequence[float]], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Photo pixel positions → aligned positions by the case's stored 2x3 alignment matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    points = np.stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.ones(len(x))])
    out = m @ points
    return out[0], out[1]


def blurred_counts(fixations: Fixations, *, sigma: float, shape: tuple[int, int] = (SIZE, SIZE),
                   weighted: bool = True) -> np.ndarray:
    """Duration-weighted fixation counts blurred by the Gaussian, not normalised (the blur is linear, so
    the blurred counts of a group minus one participant's are the blurred counts of the rest)."""
    counts = np.zeros(shape, dtype=np.float64)
    rows, cols = fixations.indices(shape)
    if not len(rows):
        return counts
    weights = fixations.duration[fixations.inside(shape)] if weighted else np.ones(len(rows))
    np.add.at(counts, (rows, cols), weights)
    return gaussian_filter(counts, sigma=max(sigma, 1e-6), mode="constant", truncate=4.0)


def normalised(blurred: np.ndarray) -> np.ndarray:
    """Blurred counts as a density summing to 1; uniform when there is no mass."""
    clean = np.maximum(blurred, 0.0)
    total = clean.sum()
    return clean / total if total > 0 else np.full(blurred.shape, 1.0 / blurred.size)


def density_map(fixations: Fixations, *, sigma: float, shape: tuple[int, int] = (SIZE, SIZE),
                weighted: bool = True) -> np.ndarray:
    """Gaussian fixation density summing to 1 (uniform when no fixation falls on the map).

    Fixations are weighted by duration when ``weighted`` (a long look counts more, as in the reference study);
    the blur is truncated at the map's border and the map renormalised, so the mass of fixations near the
    border stays on the map.
    """
    return normalised(blurred_counts(fixations, sigma=sigma, shape=shape, weighted=weighted))


@dataclass
class GazeTable:
    """Fixations of many participants on many cases, in aligned coordinates, one row per fixation."""

    participant: np.ndarray  # participant code (str)
    group: np.ndarray  # group name (str)
    case: np.ndarray  # case id (str)
    x: np.ndarray
    y: np.ndarray
    duration: np.ndarray  # ms
    sigma: Mapping[str, float] = field(default_factory=dict)  # case id → σ in aligned px
    densities: dict[tuple[str, str | None], np.ndarray] = field(default_factory=dict, repr=False)  # cache

    def __post_init__(self) -> None:
        for name in ("participant", "group", "case"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=object))
        for name in ("x", "y", "duration"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    def select(self, mask: np.ndarray) -> Fixations:
        return Fixations(self.x[mask], self.y[mask], self.duration[mask])

    def cases(self) -> list[str]:
        return sorted(set(self.case.tolist()))

    def groups(self) -> list[str]:
        return sorted(set(self.group.tolist()))

    def case_sigma(self, case_id: str) -> float:
        return float(self.sigma.get(case_id, DEFAULT_SIGMA))


DEFAULT_SIGMA = ViewingGeometry().sigma_aligned_px(0.3)  # a 1000 px photo of a face: align scale ≈ 0.3


@dataclass
class Estimate:
    """A mean over cases with a percentile-bootstrap 95 % interval (resampling cases)."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def bootstrap(values: Sequence[float], *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean with a percentile bootstrap interval; NaN values (a metric undefined on a case) are left out."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if not len(v):
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if len(v) == 1:
        return Estimate(float(v[0]), float("nan"), float("nan"), 1)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    return Estimate(float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)), len(v))


CaseScores = dict[str, dict[str, float]]  # case id → metric → value


def _score_case(table: GazeTable, case_id: str, saliency: np.ndarray, mask: np.ndarray,
                group: str | None) -> dict[str, float]:
    here = mask & (table.case == case_id)
    others = mask & (table.case != case_id)
    fix = table.select(here)
    key = (case_id, group)
    if key not in table.densities:  # every method is compared with the same densities: compute them once
        table.densities[key] = density_map(fix, sigma=table.case_sigma(case_id))
    return score_all(saliency, table.densities[key], fix, table.select(others))


def map_vs_gaze(table: GazeTable, maps: Mapping[str, np.ndarray], *, group: str | None = None) -> CaseScores:
    """Each case's map against the gaze of one group (or everyone), case by case.

    Shuffled AUC takes the same group's fixations on the other cases as negatives.
    """
    mask = np.ones(len(table.case), dtype=bool) if group is None else (table.group == group)
    out: CaseScores = {}
    for case_id in table.cases():
        if case_id in maps and (mask & (table.case == case_id)).any():
            out[case_id] = _score_case(table, case_id, maps[case_id], mask, group)
    return out


def group_density_maps(table: GazeTable, group: str | None = None) -> dict[str, np.ndarray]:
    """Per case, the fixation density of one group (or everyone)."""
    mask = np.ones(len(table.case), dtype=bool) if group is None else (table.group == group)
    return {case_id: density_map(table.select(mask & (table.case == case_id)), sigma=table.case_sigma(case_id))
            for case_id in table.cases() if (mask & (table.case == case_id)).any()}


def group_vs_group(table: GazeTable, reference: str, other: str) -> CaseScores:
    """The ``other`` group's density maps used as "saliency" against the ``reference`` group's gaze."""
    return map_vs_gaze(table, group_density_maps(table, other), group=reference)


def ceiling(table: GazeTable, *, group: str | None = None) -> CaseScores:
    """The inter-observer ceiling: each participant's fixations against the density of the *other*
    participants (of the group) on the same case, averaged over participants per case.

    No map predicts one observer better than other observers do (up to noise), so this tells how good
    "good" is on these data. Cases seen by fewer than two participants have no ceiling.
    """
    mask = np.ones(len(table.case), dtype=bool) if group is None else (table.group == group)
    out: CaseScores = {}
    for case_id in table.cases():
        here = mask & (table.case == case_id)
        people = sorted(set(table.participant[here].tolist()))
        if len(people) < 2:
            continue
        rows = []
        sigma = table.case_sigma(case_id)
        everyone = blurred_counts(table.select(here), sigma=sigma)
        for person in people:
            mine = here & (table.participant == person)
            fix = table.select(mine)
            own = blurred_counts(fix, sigma=sigma)
            predicted = normalised(everyone - own)  # the others' density, by the blur's linearity
            others = mask & (table.case != case_id) & (table.participant == person)
            rows.append(score_all(predicted, normalised(own), fix, table.select(others)))
        out[case_id] = {m: float(np.nanmean([r[m] for r in rows])) if any(not math.isnan(r[m]) for r in rows)
                        else float("nan") for m in ALL_METRICS}
    return out


def pooled(scores: CaseScores, *, seed: int = 0) -> dict[str, Estimate]:
    """Every metric's mean over cases with its bootstrap interval."""
    return {m: bootstrap([case[m] for case in scores.values()], seed=seed) for m in ALL_METRICS}


def compare_methods(table: GazeTable, maps: Mapping[str, Mapping[str, np.ndarray]],
                    progress: Callable[[str], None] | None = None) -> dict[str, dict[str, CaseScores]]:
    """method → group ("all" for everyone) → per-case scores."""
    groups: list[str | None] = [None, *table.groups()]
    out: dict[str, dict[str, CaseScores]] = {}
    for method, per_case in maps.items():
        if progress:
            progress(method)
        out[method] = {g or "all": map_vs_gaze(table, per_case, group=g) for g in groups}
    return out
