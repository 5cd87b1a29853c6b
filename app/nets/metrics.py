"""Held-out metrics of a syndrome ranking: top-k accuracy, per-class accuracy, confusion matrix.

Measured on the ranking the app actually shows (see :func:`app.nets.predict.rank_classes`), so the card's
numbers describe what a user gets. Per-class numbers and ``n`` are reported because a mean accuracy over
imbalanced classes hides the rare syndromes the tool exists for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.nets.card import Label
from app.nets.predict import rank_classes

__all__ = ["ranking_metrics", "true_class_ranks"]


def true_class_ranks(probabilities: np.ndarray, targets: np.ndarray, distances: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each sample's true class, plus the top-1 class, as (N, 2) int64 [rank, predicted]."""
    out = np.zeros((len(targets), 2), dtype=np.int64)
    for i, target in enumerate(np.asarray(targets).tolist()):
        order = rank_classes(probabilities[i], None if distances is None else distances[i])
        out[i, 0] = int(np.flatnonzero(order == target)[0]) + 1
        out[i, 1] = int(order[0])
    return out


def ranking_metrics(
    probabilities: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[Label],
    distances: np.ndarray | None = None,
) -> dict[str, Any]:
    """top-1/top-5, per-class top-1/top-5 with n, and the top-1 confusion matrix (rows true, columns predicted)."""
    targets = np.asarray(targets, dtype=np.int64)
    ranks = true_class_ranks(probabilities, targets, distances)
    n_classes = len(labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (targets, ranks[:, 1]), 1)
    per_class = {}
    for c, label in enumerate(labels):
        mask = targets == c
        n = int(mask.sum())
        per_class[label.id] = {
            "n": n,
            "top1": float((ranks[mask, 0] == 1).mean()) if n else None,
            "top5": float((ranks[mask, 0] <= 5).mean()) if n else None,
        }
    n_total = len(targets)
    return {
        "n": n_total,
        "top1": float((ranks[:, 0] == 1).mean()) if n_total else None,
        "top5": float((ranks[:, 0] <= 5).mean()) if n_total else None,
        "per_class": per_class,
        "confusion": {"labels": [label.id for label in labels], "matrix": confusion.tolist()},
    }
