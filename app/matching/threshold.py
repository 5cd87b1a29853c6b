"""What the match threshold means, measured on the gallery rather than asserted.

Within-syndrome distances (pairs of gallery faces of the same syndrome and *different* subjects: two photos
of one patient say nothing about how alike two patients are) and between-syndrome distances (pairs of
different syndromes). The threshold is the card's ``match_threshold`` when it gives one; otherwise the
distance below which 5% of between-syndrome pairs fall. Either way the page shows its false-match rate
(share of between-syndrome pairs below it) and its true-match rate (share of within-syndrome pairs below
it) beside both distributions, so a number is never read alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.nets.gallery import Gallery
from app.nets.registry import LoadedModel

DEFAULT_FALSE_MATCH_RATE = 0.05
MAX_ROWS = 2000  # pairs grow quadratically: above this a seeded sample of rows is measured


@dataclass(frozen=True)
class ThresholdReport:
    threshold: float
    source: str  # "card" or "measured"
    false_match_rate: float  # between-syndrome pairs below the threshold
    true_match_rate: float  # within-syndrome (different-subject) pairs below it
    within: np.ndarray
    between: np.ndarray
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"threshold": round(self.threshold, 4), "source": self.source,
                "false_match_rate": round(self.false_match_rate, 4), "true_match_rate": round(self.true_match_rate, 4),
                "within_pairs": int(self.within.size), "between_pairs": int(self.between.size), "rows": self.rows,
                "within_median": float(np.median(self.within)) if self.within.size else None,
                "between_median": float(np.median(self.between)) if self.between.size else None}


def pair_distances(gallery: Gallery, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    rows = np.arange(len(gallery))
    if rows.size > MAX_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_ROWS, replace=False))
    views = gallery.view_stack()[rows].astype(np.float64)  # unit rows
    distance = 1.0 - np.einsum("mvd,nvd->mnv", views, views).mean(axis=2)
    labels = gallery.labels[rows]
    subjects = gallery.subject_ids[rows] if gallery.subject_ids is not None else gallery.image_ids[rows]
    first, second = np.triu_indices(rows.size, k=1)
    same = labels[first] == labels[second]
    other_subject = subjects[first] != subjects[second]
    values = distance[first, second]
    return values[same & other_subject], values[~same], int(rows.size)


def measure(model: LoadedModel) -> ThresholdReport | None:
    """None when the model has no gallery or it has fewer than two syndromes."""
    if model.gallery is None:
        return None
    within, between, rows = pair_distances(model.gallery)
    if between.size == 0:
        return None
    given = model.card.extra.get("match_threshold")
    if isinstance(given, int | float) and not isinstance(given, bool):
        threshold, source = float(given), "card"
    else:
        threshold, source = float(np.quantile(between, DEFAULT_FALSE_MATCH_RATE)), "measured"
    return ThresholdReport(threshold=threshold, source=source,
                           false_match_rate=float((between < threshold).mean()),
                           true_match_rate=float((within < threshold).mean()) if within.size else float("nan"),
                           within=within, between=between, rows=rows)


def plot_png(report: ThresholdReport) -> bytes:
    """Both distributions as densities with the threshold drawn across them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    bins = np.linspace(0.0, max(1.0, float(np.max(np.concatenate([report.within, report.between])))), 60)
    if report.within.size:
        axes.hist(report.within, bins=bins, density=True, alpha=0.6,
                  label=f"same syndrome, different patients ({report.within.size} pairs)")
    axes.hist(report.between, bins=bins, density=True, alpha=0.6,
              label=f"different syndromes ({report.between.size} pairs)")
    axes.axvline(report.threshold, color="black", linestyle="--",
                 label=f"threshold {report.threshold:.3f}: false-match rate {report.false_match_rate:.1%}")
    axes.set_xlabel("cosine distance between two gallery faces")
    axes.set_ylabel("density")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
