"""Saliency-benchmark metrics between a map and fixations (or between two maps).

The definitions follow the MIT/Tübingen saliency benchmark (Bylinskii et al., "What do different evaluation
metrics tell us about saliency models?", IEEE TPAMI 2019) and pysaliency (Kümmerer et al.), which the tests use
as the reference where it defines the metric:

* ``nss``: mean of the z-scored map at the fixated pixels (pysaliency ``NSS``: population std, ddof 0).
* ``auc_judd``: thresholds at the map's values under the fixations; negatives are the pixels that are not
  fixated (MIT ``AUC_Judd`` and pysaliency's, without the optional jitter).
* ``auc_borji``: negatives drawn uniformly from all pixels, ``splits`` times as many as fixations, thresholds
  every 0.1 of the min-max normalised map (MIT ``AUC_Borji``; seeded, so deterministic).
* ``auc_shuffled``: exact ROC area with other cases' fixations as negatives, which cancels the centre bias
  every face has (pysaliency's sAUC; ties count one half).
* ``auc_exact``: exact ROC area, fixated values against every pixel (pysaliency ``AUC`` with uniform
  non-fixations).
* ``cc``: Pearson correlation of two maps; ``sim``: histogram intersection of two maps normalised to sum 1;
  ``kl``: KL divergence of a map from the gaze density, ``sum P log(eps + P / (eps + Q))`` with both
  normalised to sum 1 (MIT ``KLdiv``: eps is the float epsilon; lower is better).
* ``top_iou``: IoU of the top-q % pixels of two maps (what Duong et al., PLoS Genetics 2024, report:
  clinicians vs saliency 0.15, clinicians vs non-clinicians 0.47).

Signed maps (Grad-CAM here is signed) enter as they are: metrics that need a distribution (SIM, KL) shift the
map to be non-negative first, as the benchmark code does.

Everything works on numpy arrays; fixations are (x, y) in map pixels (continuous; a fixation at x lies in
column ``floor(x)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = float(np.finfo(np.float64).eps)  # MATLAB's eps, which the MIT code uses in KL and SIM


@dataclass(frozen=True)
class Fixations:
    """Fixations on one map: positions in map pixels and durations (ms; 1 when unknown)."""

    x: np.ndarray
    y: np.ndarray
    duration: np.ndarray

    @classmethod
    def of(cls, xy: np.ndarray | list, duration: np.ndarray | list | None = None) -> Fixations:
        points = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        weights = np.ones(len(points)) if duration is None else np.asarray(duration, dtype=np.float64)
        return cls(points[:, 0], points[:, 1], weights)

    def __len__(self) -> int:
        return len(self.x)

    def inside(self, shape: tuple[int, int]) -> np.ndarray:
        """Which fixations fall on a map of this shape."""
        cols, rows = np.floor(self.x), np.floor(self.y)
        return (cols >= 0) & (cols < shape[1]) & (rows >= 0) & (rows < shape[0])

    def indices(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the pixels the fixations fall in; positions outside the map are dropped."""
        keep = self.inside(shape)
        return np.floor(self.y[keep]).astype(np.int64), np.floor(self.x[keep]).astype(np.int64)


def _values(saliency: np.ndarray, fixations: Fixations) -> np.ndarray:
    rows, cols = fixations.indices(saliency.shape)
    return np.asarray(saliency, dtype=np.float64)[rows, cols]


def nss(saliency: np.ndarray, fixations: Fixations) -> float:
    """Normalised scanpath saliency: 0 is chance, higher is better; a flat map scores 0."""
    s = np.asarray(saliency, dtype=np.float64)
    values = _values(s, fixations)
    if not len(values):
        return float("nan")
    std = s.std()
    return float(((values - s.mean()) / std).mean()) if std > 0 else 0.0


def roc_area(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Exact area under the ROC curve of positives against negatives (Mann-Whitney U / (n_pos n_neg)),
    ties counting one half: the probability that a random positive outranks a random negative."""
    pos = np.asarray(positives, dtype=np.float64).ravel()
    neg = np.sort(np.asarray(negatives, dtype=np.float64).ravel())
    if not len(pos) or not len(neg):
        return float("nan")
    below = np.searchsorted(neg, pos, side="left")
    not_above = np.searchsorted(neg, pos, side="right")
    return float((below + 0.5 * (not_above - below)).sum() / (len(pos) * len(neg)))


def auc_exact(saliency: np.ndarray, fixations: Fixations) -> float:
    """Fixated values against every pixel of the map (pysaliency's AUC with uniform non-fixations)."""
    return roc_area(_values(saliency, fixations), np.asarray(saliency, dtype=np.float64))


def auc_judd(saliency: np.ndarray, fixations: Fixations) -> float:
    """AUC-Judd (Judd et al. 2009; MIT code, pysaliency ``AUC_Judd`` without jitter): thresholds at the map's
    values under the fixations; positives are every fixation, negatives the pixels no fixation fell in."""
    s = np.asarray(saliency, dtype=np.float64)
    rows, cols = fixations.indices(s.shape)
    fixated = np.zeros(s.shape, dtype=bool)
    fixated[rows, cols] = True
    positives, negatives = s[rows, cols], s[~fixated]
    if not len(positives) or not len(negatives):
        return float("nan")
    low = min(positives.min(), negatives.min())
    thresholds = np.sort(np.concatenate([[max(positives.max(), negatives.max()) + 1], positives, [low]]))[::-1]
    pos, neg = np.sort(positives), np.sort(negatives)
    tp = np.concatenate([[0.0], (len(pos) - np.searchsorted(pos, thresholds, side="left")) / len(pos)])
    fp = np.concatenate([[0.0], (len(neg) - np.searchsorted(neg, thresholds, side="left")) / len(neg)])
    return float(np.trapezoid(tp, fp))


def _threshold_aucs(positives: np.ndarray, negatives: np.ndarray, step: float) -> np.ndarray:
    """The MIT code's AUC on a fixed threshold grid (``max:-step:0`` of the normalised map), for each row of
    ``negatives`` at once. One grid serves every row: thresholds above a row's own maximum add only (0, 0)
    points, which enclose no area, so the result equals the per-row grid of the MIT code."""
    top = max(float(positives.max()), float(negatives.max()))
    thresholds = np.arange(0.0, top + step, step)[::-1]
    tp = (positives[None, :] >= thresholds[:, None]).mean(axis=1)  # (K,)
    fp = (negatives[:, None, :] >= thresholds[None, :, None]).mean(axis=2)  # (splits, K)
    rows = negatives.shape[0]
    tp_curve = np.hstack([np.zeros((rows, 1)), np.broadcast_to(tp, (rows, len(tp))), np.ones((rows, 1))])
    fp_curve = np.hstack([np.zeros((rows, 1)), fp, np.ones((rows, 1))])
    return np.trapezoid(tp_curve, fp_curve, axis=1)


def _normalise(saliency: np.ndarray) -> np.ndarray:
    s = np.asarray(saliency, dtype=np.float64)
    span = s.max() - s.min()
    return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def auc_borji(saliency: np.ndarray, fixations: Fixations, *, splits: int = 100, step: float = 0.1,
              seed: int = 0) -> float:
    """AUC-Borji: ``splits`` draws of uniformly random pixels (as many as fixations) as negatives, averaged."""
    s = _normalise(saliency)
    positives = _values(s, fixations)
    if not len(positives):
        return float("nan")
    rng = np.random.default_rng(seed)
    flat = s.ravel()
    draws = rng.integers(0, flat.size, size=(splits, len(positives)))
    return float(np.mean(_threshold_aucs(positives, flat[draws], step)))


def auc_shuffled(saliency: np.ndarray, fixations: Fixations, others: Fixations) -> float:
    """Shuffled AUC: this case's fixations against other cases' fixations on the same (aligned) grid."""
    s = np.asarray(saliency, dtype=np.float64)
    return roc_area(_values(s, fixations), _values(s, others))


def cc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's linear correlation of two maps: 1 identical up to scale, 0 unrelated."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def as_distribution(saliency: np.ndarray) -> np.ndarray:
    """Shifted to be non-negative (signed maps) and scaled to sum 1; a flat map becomes uniform."""
    s = np.asarray(saliency, dtype=np.float64)
    s = s - min(0.0, float(s.min()))
    total = s.sum()
    return s / total if total > 0 else np.full_like(s, 1.0 / s.size)


def sim(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity (histogram intersection) of two maps as distributions: 1 identical, 0 disjoint."""
    return float(np.minimum(as_distribution(a), as_distribution(b)).sum())


def kl(saliency: np.ndarray, density: np.ndarray) -> float:
    """KL divergence of the map Q from the gaze density P (MIT ``KLdiv``): 0 identical, higher is worse."""
    q = as_distribution(saliency)
    p = as_distribution(density)
    return float((p * np.log(EPS + p / (EPS + q))).sum())


def top_mask(saliency: np.ndarray, q: float) -> np.ndarray:
    """The top ``q`` % pixels (at least one): ties at the cut are broken by position, so the mask has exactly
    round(q % of the pixels) pixels whatever the map."""
    s = np.asarray(saliency, dtype=np.float64).ravel()
    count = min(s.size, max(1, round(s.size * q / 100.0)))
    cut = np.partition(s, s.size - count)[s.size - count]  # the count-th largest value
    mask = s > cut
    mask[np.flatnonzero(s == cut)[: count - int(mask.sum())]] = True  # ties at the cut: lowest index first
    return mask.reshape(np.shape(saliency))


def top_iou(a: np.ndarray, b: np.ndarray, *, q: float = 10.0) -> float:
    """Intersection over union of the two maps' top-q % regions (1 the same region, 0 disjoint)."""
    ma, mb = top_mask(a, q), top_mask(b, q)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else float("nan")


FIXATION_METRICS = ("nss", "auc_judd", "auc_borji", "auc_shuffled")
MAP_METRICS = ("cc", "sim", "kl", "top_iou")
ALL_METRICS = FIXATION_METRICS + MAP_METRICS
HIGHER_IS_BETTER = {name: name != "kl" for name in ALL_METRICS}


def score_all(saliency: np.ndarray, density: np.ndarray, fixations: Fixations, others: Fixations | None = None,
              *, q: float = 10.0) -> dict[str, float]:
    """Every metric of a map against one set of fixations and their density map."""
    return {
        "nss": nss(saliency, fixations),
        "auc_judd": auc_judd(saliency, fixations),
        "auc_borji": auc_borji(saliency, fixations),
        "auc_shuffled": auc_shuffled(saliency, fixations, others) if others is not None and len(others) else
        float("nan"),
        "cc": cc(saliency, density),
        "sim": sim(saliency, density),
        "kl": kl(saliency, density),
        "top_iou": top_iou(saliency, density, q=q),
    }
