"""The default face count, chosen from the interval width it buys.

Why a measured choice: every benchmark face costs ten maps and their curves (about 7 s on 2 idle cores, two
thirds of the default run), and buys a narrower interval only as 1/√n. A count picked by habit either wastes
minutes or gives intervals too wide to read. So: take the per-face values of a run on a larger pool of faces
(``scorecard.json`` → ``per_image``, which every run stores), draw many stratified subsets of ``n`` faces (the
same number from every syndrome, as the benchmark builds them), compute the scorecard's own 95 % bootstrap
interval on each, and read its half-width as a function of ``n`` (:func:`half_widths`). The default is the
smallest count at which the typical (median) method's half-width meets the targets (:func:`choose_face_count`).

**The targets** (:func:`targets`) come from the levels each key column has to tell apart, read off the pool run
itself, not a chosen constant: the typical method's interval must not reach halfway across that distance.

* **relevance mass** (the column the page marks "beats the centre prior" on): half the distance between the
  fitted centre prior and the chance level (the mask's area share); on the demo model (0.158 − 0.080) / 2 = 0.039.
* **deletion gap in |map| order** (the faithfulness ranking): half the typical (median) method's gap, the
  distance from it to the reference line 0; on the demo model 1.15 / 2 = 0.58 target-logit units.

**Measured** (``bench/bench_evaluate.py --face-counts --from bench/results/face_count_pool-amd-epyc-2026-12-07.json``:
48 faces, 6 per syndrome, seed 1000, all ten methods; 30 subsets a count), the median method's half-width:

=====  =====  ======  =============  ========  =============================
faces  mass   rank    deletion gap   pointing  expected default run (2 cores)
=====  =====  ======  =============  ========  =============================
8      0.047  0.073   0.65           0.30      132 s
16     0.033  0.054   0.47           0.22      178 s
24     0.028  0.044   0.40           0.18      223 s
32     0.024  0.038   0.35           0.16      269 s
48     0.020  0.031   0.28           0.13      360 s
=====  =====  ======  =============  ========  =============================

8 faces miss both targets (0.047 > 0.039, 0.65 > 0.58); **16 faces (2 per syndrome) meet both**, and the run
stays within the 3-minute goal (24 faces would not). So :data:`DEFAULT_PER_CLASS` is 2. What 16 faces do not buy,
said plainly: the widest method (guided Grad-CAM, whose mass varies most between faces, sd 0.21) keeps ±0.10 on
mass and ±0.8 on the deletion gap (still far above the control, 0.385 against 0.158, so its verdict holds);
rank accuracy's typical ±0.054 would need 40 faces to reach its own target (0.038); the pointing game, a 0/1 per
face, stays about ±0.2. Raise ``--per-class`` or ``--seeds`` for a study. The sanity and robustness checks use
their own subset of faces (``sanity_faces``), not this count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_PER_CLASS", "KEY_METRICS", "FaceCountChoice", "choose_face_count", "half_widths",
           "per_face_values", "pool_values", "targets"]

#: Benchmark faces per syndrome of the default run (16 faces over the demo model's 8 syndromes): the count
#: :func:`choose_face_count` picks from the committed pool run (see the module's docstring for the numbers).
DEFAULT_PER_CLASS = 2
#: The columns whose interval width sets the count (``per_image`` keys).
KEY_METRICS = ("mass", "deletion_gap")
#: Columns whose widths are reported beside them (they do not set the count).
REPORTED = ("rank", "pointing", "top_k", "auc", "insertion_gap", "road_gap", "correlation", "sparseness")


def pool_values(card: Mapping[str, Any], metrics: Sequence[str] = (*KEY_METRICS, *REPORTED)) -> dict[str, Any]:
    """A run's per-face values in columns (what ``bench/results`` keeps of a pool run) and the reference levels
    :func:`targets` reads; :func:`per_face_values` and :func:`targets` accept it as they accept a scorecard."""
    labels, values = per_face_values(card)
    return {"labels": labels, "methods": list(card["methods"]),
            "values": {m: {method: [round(float(v), 6) for v in column] for method, column in by.items()}
                       for m, by in values.items() if m in metrics},
            "reference": _reference_levels(card), "benchmark": card.get("benchmark", {}),
            "model": card.get("model", {}), "timings": card.get("timings", {})}


def per_face_values(card: Mapping[str, Any]) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """(each face's syndrome, metric → method → per-face values) from a scorecard's ``per_image`` rows (or the
    columns of :func:`pool_values`).

    A metric is kept for a method only when every face has it (older runs lack the newer columns)."""
    if "values" in card:
        return list(card["labels"]), {m: {method: np.asarray(v, dtype=np.float64) for method, v in by.items()}
                                      for m, by in card["values"].items()}
    rows = list(card["per_image"])
    if not rows:
        raise ValueError("the scorecard has no per-face values (per_image is empty)")
    labels = [row["label"] for row in rows]
    values: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for method in card["methods"]:
        entries = [row["methods"][method] for row in rows]
        for metric in set(entries[0]):
            column = [e.get(metric) for e in entries]
            if all(isinstance(v, int | float) for v in column):  # bool (pointing) counts as 0/1
                values[metric][method] = np.asarray(column, dtype=np.float64)
    return labels, dict(values)


def _reference_levels(card: Mapping[str, Any]) -> dict[str, float]:
    if "reference" in card:
        return dict(card["reference"])
    _, values = per_face_values(card)
    return {"area_share": float(card["chance"]["area_share"]["mean"]),
            "centre_prior_mass": float(card["chance"]["centre_prior"]["mass"]["mean"]),
            "median_deletion_gap": float(np.median([abs(v.mean()) for v in values["deletion_gap"].values()]))}


def targets(card: Mapping[str, Any]) -> dict[str, float]:
    """Key column → the largest half-width the typical method may have: half the distance between the two
    levels the column must tell apart (mass: centre prior and chance; deletion gap: the typical gap and 0)."""
    levels = _reference_levels(card)
    return {"mass": (levels["centre_prior_mass"] - levels["area_share"]) / 2,
            "deletion_gap": levels["median_deletion_gap"] / 2}


def _by_class(labels: Sequence[str]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    return {label: np.asarray(indices) for label, indices in sorted(groups.items())}


def half_widths(labels: Sequence[str], values: Mapping[str, Mapping[str, np.ndarray]], per_class: Sequence[int], *,
                draws: int = 30, seed: int = 0) -> dict[int, dict[str, dict[str, float]]]:
    """Per faces-per-syndrome count: metric → method → mean 95 % bootstrap half-width over ``draws`` subsets.

    Each subset takes ``k`` faces of every syndrome without replacement (as the benchmark does), so ``k`` must
    not exceed the pool's smallest class. The interval is the scorecard's (``bootstrap_ci``, 2000 resamples);
    each draw's bootstrap has its own seed, as a fresh run's faces would."""
    from app.evaluate.localisation import bootstrap_ci  # here: the CLI imports this module for its default

    groups = _by_class(labels)
    smallest = min(len(g) for g in groups.values())
    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, dict[str, float]]] = {}
    for k in per_class:
        if not 1 <= k <= smallest:
            raise ValueError(f"{k} faces per syndrome: the pool has {smallest} for its smallest syndrome")
        widths: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for d in range(draws if k < smallest else 1):  # the whole pool has one subset
            chosen = np.concatenate([rng.choice(g, size=k, replace=False) for g in groups.values()])
            for metric, by_method in values.items():
                for method, column in by_method.items():
                    ci = bootstrap_ci(column[chosen], seed=seed + d)
                    widths[metric][method].append((ci.high - ci.low) / 2)
        out[k] = {metric: {method: float(np.mean(w)) for method, w in by_method.items()}
                  for metric, by_method in widths.items()}
    return out


@dataclass(frozen=True)
class FaceCountChoice:
    """The smallest faces-per-syndrome count whose typical method meets every target (None: none in the pool)."""

    per_class: int | None
    faces: int | None
    classes: int
    targets: dict[str, float]
    typical: dict[int, dict[str, float]]  # per_class → metric → the median method's half-width
    widest: dict[int, dict[str, tuple[str, float]]]  # per_class → metric → (widest method, its half-width)

    def table(self) -> str:
        """Markdown: per count, each key metric's typical and widest half-width, and whether the targets are met."""
        metrics = list(self.targets)
        lines = ["| faces (per syndrome) | " + " | ".join(
            f"{m} ± typical (target {self.targets[m]:.3f}) | {m} ± widest" for m in metrics) + " | meets all |",
            "|---|" + "---|" * (2 * len(metrics) + 1)]
        for k, typical in self.typical.items():
            cells = [f"{typical[m]:.3f} | {self.widest[k][m][1]:.3f} ({self.widest[k][m][0]})" for m in metrics]
            ok = all(typical[m] <= self.targets[m] for m in metrics)
            lines.append(f"| {k * self.classes} ({k}) | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
        return "\n".join(lines)


def choose_face_count(widths: Mapping[int, Mapping[str, Mapping[str, float]]], classes: int,
                      goals: Mapping[str, float]) -> FaceCountChoice:
    """The smallest count in ``widths`` (from :func:`half_widths`) whose median method meets every goal.

    Why the median and not the widest method: the widest is the method whose values vary most between faces
    (guided Grad-CAM's mass on the demo model), usually far from its reference line, where a wide interval does
    not change its verdict; no count a default run can afford narrows it (±0.06 at 48 faces)."""
    missing = [m for m in goals if any(m not in w for w in widths.values())]
    if missing:
        raise ValueError(f"no per-face values for {', '.join(missing)}")
    typical = {k: {m: float(np.median(list(w[m].values()))) for m in goals} for k, w in sorted(widths.items())}
    widest = {k: {m: max(w[m].items(), key=lambda item: item[1]) for m in goals} for k, w in sorted(widths.items())}
    chosen = next((k for k, by in typical.items() if all(by[m] <= goals[m] for m in goals)), None)
    return FaceCountChoice(per_class=chosen, faces=None if chosen is None else chosen * classes, classes=classes,
                           targets=dict(goals), typical=typical, widest=widest)
