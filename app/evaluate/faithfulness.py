"""Faithfulness: does removing what a map calls relevant change the model's output, and by how much?

Why both families:

* **Deletion / insertion curves** (Petsiuk et al., RISE 2018; Samek et al. 2017). Pixels are ordered by the
  map, most relevant first (MoRF) or least relevant first (LeRF). *Relevant* means ``|map|`` (``order=
  "magnitude"``, the default, and the only order in which signed and unsigned methods are ranked against
  each other): for a signed map, ordering by signed value makes "least relevant first" remove the strongest
  *negative* evidence first, which raises the target score and inflates the gap (IG's deletion gap on the
  demo model was +4.7 in signed order, +0.8 in |map| order). ``order="signed"`` (positive evidence first) is
  reported beside it for signed methods, always labelled with its order. *Deletion* replaces the first ``f`` of them
  with the baseline (black, −1, like the methods' baselines and the occluder); *insertion* starts from a
  blurred copy of the image (Gaussian, σ = 5 px, as RISE does) and puts the original pixels back. (Starting
  insertion from the same black baseline would make it deletion run from the other end: insertion-LeRF at
  ``f`` *is* deletion-MoRF at ``1 − f``, so its gap would equal the deletion gap and add nothing.)
  The target score is recorded at every fraction. A faithful map makes the
  deletion-MoRF curve fall fast and the LeRF curve stay high; insertion the other way round. A model that
  ignores its input gives flat curves, whatever the map.
* **Faithfulness correlation** (Bhatt et al., IJCAI 2020): for random subsets of input values (224 of the
  3 × H × W, 100 subsets, as Quantus), the Pearson correlation between the map's sum over the subset and
  the drop of the score when the subset is set to black. The subsets do not depend on the map, so the
  drops are measured once per face and shared by every method (:func:`subset_drops`).
* **ROAD** (Rong et al., ICML 2022). Black pixels are out of distribution, and a removal pattern's *shape*
  can leak the class; ROAD imputes removed pixels by *noisy linear imputation* (each removed pixel the mean of
  its 8 neighbours, weights 1/6 for edge- and 1/12 for corner-neighbours, solved jointly as one sparse linear
  system, plus small Gaussian noise) so the model sees plausible images. MoRF and LeRF at fixed removal
  percentages.

``score`` is any function from a batch of normalised images ``(N, 3, H, W)`` float32 to ``(N,)`` scores
(typically the target logit): the ML core takes callables and arrays, never a web request.
AUC is the trapezoidal area under score-vs-fraction divided by the fractions' span (raw score units,
so curves of different models are not mixed), and ``gap`` is LeRF AUC − MoRF AUC for deletion and ROAD
(positive = faithful).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

__all__ = [
    "DEFAULT_FRACTIONS",
    "ORDERS",
    "ROAD_PERCENTAGES",
    "Curve",
    "FaithfulnessResult",
    "auc",
    "deletion_curve",
    "evaluate_faithfulness",
    "faithfulness_correlation",
    "insertion_curve",
    "noisy_linear_impute",
    "pixel_order",
    "random_subsets",
    "road_curve",
    "subset_drops",
]

Score = Callable[[np.ndarray], np.ndarray]

#: Fractions of pixels removed / inserted (0 and 1 included: both ends of the curve are measured).
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 17), 6))
#: ROAD's removal percentages (Rong et al. report 10..90 %).
ROAD_PERCENTAGES: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Noise of the imputation: Rong et al.'s 0.01 on a [0, 1] image is 0.02 on the [-1, 1] input.
ROAD_NOISE = 0.02
BASELINE = -1.0
#: Pixel orders: by |map| (ranking every method) and by signed value (positive evidence first).
ORDERS = ("magnitude", "signed")
#: Faithfulness correlation's subsets: how many, and how many input values each (Quantus' defaults).
CORRELATION_RUNS = 100
CORRELATION_SUBSET = 224


@dataclass(frozen=True)
class Curve:
    """Scores at fractions of pixels removed (deletion, ROAD) or inserted (insertion)."""

    fractions: tuple[float, ...]
    scores: tuple[float, ...]

    @property
    def auc(self) -> float:
        return auc(self.fractions, self.scores)

    def to_dict(self) -> dict[str, object]:
        return {"fractions": list(self.fractions), "scores": [round(s, 6) for s in self.scores],
                "auc": round(self.auc, 6)}


def auc(fractions: Sequence[float], scores: Sequence[float]) -> float:
    """Trapezoidal area under ``scores`` over ``fractions`` (ascending), divided by the fractions' span.

    Dividing by the span makes it the curve's mean height, in the score's units, so ROAD's 0–90 % curve and
    the 0–100 % deletion curves read alike (over [0, 1] the division changes nothing).
    """
    x, y = np.asarray(fractions, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if x.size < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / (x[-1] - x[0]))


def pixel_order(attribution: np.ndarray, *, most_relevant_first: bool = True, order: str = "magnitude") -> np.ndarray:
    """Flat pixel indices sorted by relevance: ``|map|`` (``order="magnitude"``) or signed value (``"signed"``,
    most positive first for MoRF).

    Ties keep row-major order (a stable sort), so the order, and every curve, is deterministic.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    values = np.asarray(attribution, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise ValueError("the map has non-finite values")
    if order == "magnitude":
        values = np.abs(values)
    return np.argsort(-values if most_relevant_first else values, kind="stable")


def _counts(fractions: Sequence[float], n_pixels: int) -> list[int]:
    if any(not 0.0 <= f <= 1.0 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError("fractions must be ascending values in [0, 1]")
    return [round(f * n_pixels) for f in fractions]


#: σ (pixels) of the blurred image insertion starts from (RISE's blur).
INSERTION_BLUR_SIGMA = 5.0


def blurred(image: np.ndarray, sigma: float = INSERTION_BLUR_SIGMA) -> np.ndarray:
    """Each channel of a (C, H, W) image Gaussian-blurred (reflecting borders): insertion's start image."""
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in np.asarray(image, np.float32)])


def _perturbed(image: np.ndarray, order: np.ndarray, counts: Sequence[int], *, insert: bool) -> np.ndarray:
    channels, height, width = image.shape
    flat = image.reshape(channels, -1)
    start = blurred(image).reshape(channels, -1) if insert else None
    batch = np.empty((len(counts), channels, height * width), dtype=np.float32)
    for i, k in enumerate(counts):
        if start is not None:
            row = start.copy()
            row[:, order[:k]] = flat[:, order[:k]]
        else:
            row = flat.copy()
            row[:, order[:k]] = BASELINE
        batch[i] = row
    return batch.reshape(len(counts), channels, height, width)


def _curve(score: Score, image: np.ndarray, attribution: np.ndarray, fractions: Sequence[float], *,
           most_relevant_first: bool, insert: bool, order_by: str = "magnitude") -> Curve:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[1:] != np.shape(attribution):
        raise ValueError(f"image {image.shape} must be (3, H, W) with the map's (H, W) {np.shape(attribution)}")
    order = pixel_order(attribution, most_relevant_first=most_relevant_first, order=order_by)
    counts = _counts(fractions, order.size)
    scores = np.asarray(score(_perturbed(image, order, counts, insert=insert)), dtype=np.float64).ravel()
    if scores.shape != (len(counts),):
        raise ValueError(f"score returned {scores.shape} for a batch of {len(counts)}")
    return Curve(fractions=tuple(float(f) for f in fractions), scores=tuple(float(s) for s in scores))


def deletion_curve(score: Score, image: np.ndarray, attribution: np.ndarray,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, *, most_relevant_first: bool = True,
                   order: str = "magnitude") -> Curve:
    """Target score as the first ``f`` of the ordered pixels are set to the black baseline."""
    return _curve(score, image, attribution, fractions, most_relevant_first=most_relevant_first, insert=False,
                  order_by=order)


def insertion_curve(score: Score, image: np.ndarray, attribution: np.ndarray,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS, *, most_relevant_first: bool = True,
                    order: str = "magnitude") -> Curve:
    """Target score as the first ``f`` of the ordered pixels are put back onto the blurred image."""
    return _curve(score, image, attribution, fractions, most_relevant_first=most_relevant_first, insert=True,
                  order_by=order)


_NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))


def noisy_linear_impute(image: np.ndarray, removed: np.ndarray, *, noise: float = ROAD_NOISE,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation of the ``removed`` pixels (boolean (H, W)) of a (C, H, W) image.

    Every removed pixel equals the weighted mean of its in-image neighbours (known or removed), so the values
    solve one sparse linear system per image (all channels at once); Gaussian noise of std ``noise`` is then
    added to the imputed pixels only. Known pixels are returned unchanged.
    """
    image = np.asarray(image, dtype=np.float64)
    removed = np.asarray(removed).astype(bool)
    channels, height, width = image.shape
    if removed.shape != (height, width):
        raise ValueError(f"removed {removed.shape} must be the image's (H, W) {(height, width)}")
    out = image.copy()
    n = int(removed.sum())
    if n == 0:
        return out.astype(np.float32)
    index = -np.ones((height, width), dtype=np.int64)
    ys, xs = np.nonzero(removed)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.zeros(n)]
    rhs = np.zeros((n, channels))
    diagonal = np.zeros(n)
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        src = np.nonzero(inside)[0]
        ny, nx = ny[inside], nx[inside]
        diagonal[src] += weight
        neighbour = index[ny, nx]
        unknown = neighbour >= 0
        rows.append(src[unknown])
        cols.append(neighbour[unknown])
        vals.append(np.full(int(unknown.sum()), -weight))
        known = ~unknown
        rhs[src[known]] += weight * image[:, ny[known], nx[known]].T
    vals[0] = diagonal
    matrix = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solution = spsolve(matrix.tocsc(), rhs)
    solution = np.asarray(solution).reshape(n, channels)
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        solution = solution + rng.normal(0.0, noise, size=solution.shape)
    out[:, ys, xs] = solution.T
    return out.astype(np.float32)


def road_curve(score: Score, image: np.ndarray, attribution: np.ndarray,
               percentages: Sequence[float] = ROAD_PERCENTAGES, *, most_relevant_first: bool = True,
               noise: float = ROAD_NOISE, seed: int = 0, order_by: str = "magnitude") -> Curve:
    """ROAD: target score after imputing the first ``p`` of the ordered pixels (0 % is the image itself)."""
    image = np.asarray(image, dtype=np.float32)
    order = pixel_order(attribution, most_relevant_first=most_relevant_first, order=order_by)
    fractions = [0.0, *percentages]
    counts = _counts(fractions, order.size)
    rng = np.random.default_rng(seed)
    batch = []
    for k in counts:
        removed = np.zeros(order.size, dtype=bool)
        removed[order[:k]] = True
        batch.append(noisy_linear_impute(image, removed.reshape(image.shape[1:]), noise=noise, rng=rng))
    scores = np.asarray(score(np.stack(batch)), dtype=np.float64).ravel()
    return Curve(fractions=tuple(float(f) for f in fractions), scores=tuple(float(s) for s in scores))


@dataclass(frozen=True)
class FaithfulnessResult:
    """Every curve of one map; ``gap``s are LeRF − MoRF AUC (deletion, ROAD) and MoRF − LeRF (insertion)."""

    deletion_morf: Curve
    deletion_lerf: Curve
    insertion_morf: Curve
    insertion_lerf: Curve
    road_morf: Curve | None = None
    road_lerf: Curve | None = None
    extra: dict[str, float] = field(default_factory=dict)
    order: str = "magnitude"

    @property
    def deletion_gap(self) -> float:
        return self.deletion_lerf.auc - self.deletion_morf.auc

    @property
    def insertion_gap(self) -> float:
        return self.insertion_morf.auc - self.insertion_lerf.auc

    @property
    def road_gap(self) -> float | None:
        if self.road_morf is None or self.road_lerf is None:
            return None
        return self.road_lerf.auc - self.road_morf.auc

    def summary(self) -> dict[str, float | None]:
        return {
            "deletion_morf_auc": self.deletion_morf.auc, "deletion_lerf_auc": self.deletion_lerf.auc,
            "insertion_morf_auc": self.insertion_morf.auc, "insertion_lerf_auc": self.insertion_lerf.auc,
            "deletion_gap": self.deletion_gap, "insertion_gap": self.insertion_gap,
            "road_morf_auc": None if self.road_morf is None else self.road_morf.auc,
            "road_lerf_auc": None if self.road_lerf is None else self.road_lerf.auc,
            "road_gap": self.road_gap,
        }


def evaluate_faithfulness(score: Score, image: np.ndarray, attribution: np.ndarray, *,
                          fractions: Sequence[float] = DEFAULT_FRACTIONS,
                          road_percentages: Sequence[float] | None = ROAD_PERCENTAGES,
                          seed: int = 0, order: str = "magnitude") -> FaithfulnessResult:
    """Deletion and insertion (MoRF and LeRF) and, unless ``road_percentages`` is None, ROAD (MoRF, LeRF), with
    pixels in ``order`` ("magnitude": by |map|; "signed": positive evidence first).

    The four deletion/insertion curves go to ``score`` as one batch (fewer, larger forward passes)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[1:] != np.shape(attribution):
        raise ValueError(f"image {image.shape} must be (3, H, W) with the map's (H, W) {np.shape(attribution)}")
    road = {}
    if road_percentages is not None:
        road = {"road_morf": road_curve(score, image, attribution, road_percentages, seed=seed, order_by=order),
                "road_lerf": road_curve(score, image, attribution, road_percentages, most_relevant_first=False,
                                        seed=seed, order_by=order)}
    orders = {first: pixel_order(attribution, most_relevant_first=first, order=order) for first in (True, False)}
    counts = _counts(fractions, orders[True].size)
    plan = [(f"{kind}_{'morf' if first else 'lerf'}", first, kind == "insertion")
            for kind in ("deletion", "insertion") for first in (True, False)]
    batch = np.concatenate([_perturbed(image, orders[first], counts, insert=insert) for _, first, insert in plan])
    scores = np.asarray(score(batch), dtype=np.float64).ravel()
    if scores.shape != (len(batch),):
        raise ValueError(f"score returned {scores.shape} for a batch of {len(batch)}")
    curves = {name: Curve(fractions=tuple(float(f) for f in fractions),
                          scores=tuple(float(v) for v in scores[i * len(counts):(i + 1) * len(counts)]))
              for i, (name, _, _) in enumerate(plan)}
    return FaithfulnessResult(**curves, **road, order=order)


def random_subsets(shape: tuple[int, ...], *, runs: int = CORRELATION_RUNS, size: int = CORRELATION_SUBSET,
                   seed: int = 0) -> np.ndarray:
    """``runs`` random subsets (without replacement) of ``size`` flat indices into an array of ``shape``."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(n, size=min(size, n), replace=False) for _ in range(runs)])


def subset_drops(score: Score, image: np.ndarray, subsets: np.ndarray, *, baseline: float = BASELINE) -> np.ndarray:
    """f(x) − f(x with the subset's values at ``baseline``), per subset (flat indices into the (C, H, W) image)."""
    image = np.asarray(image, dtype=np.float32)
    batch = np.repeat(image.reshape(1, -1), len(subsets) + 1, axis=0)
    for i, subset in enumerate(subsets):
        batch[i + 1, subset] = baseline
    scores = np.asarray(score(batch.reshape(len(batch), *image.shape)), dtype=np.float64).ravel()
    return scores[0] - scores[1:]


def faithfulness_correlation(attribution: np.ndarray, subsets: np.ndarray, drops: np.ndarray,
                             channels: int = 3) -> float:
    """Pearson correlation of the map's sum over each subset with the score's drop (Bhatt et al. 2020).

    The (H, W) map is broadcast over the image's channels, as Quantus does, so subsets index (C, H, W) values.
    A flat map (or flat drops) correlates with nothing: 0.
    """
    values = np.broadcast_to(np.asarray(attribution, dtype=np.float64), (channels, *np.shape(attribution))).ravel()
    sums = values[np.asarray(subsets)].sum(axis=1)
    drops = np.asarray(drops, dtype=np.float64)
    if sums.std() == 0 or drops.std() == 0:
        return 0.0
    return float(np.corrcoef(sums, drops)[0, 1])
