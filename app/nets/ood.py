"""Out-of-range faces: is this face far from everything the model has seen?

A ranking always names *some* syndrome, with a confident-looking softmax, even for a face unlike any the
model was trained on (a real adult photo shown to the synthetic-only demo model gets "syndrome E 94%").
The ranking's own cosine distance does not tell such faces apart on the demo model: the astronaut's
nearest gallery image is at cosine distance 0.098, below the 90th percentile of fresh synthetic faces.
The raw 512-d embedding does: the astronaut lies along directions in which the gallery barely varies.

So the statistic is the **nearest-gallery distance in the gallery's whitened embedding space**: the
Mahalanobis distance, under the gallery's pooled within-syndrome covariance (shrunk towards a multiple of
the identity so it is invertible and stable), from the face's raw embedding to its nearest gallery
embedding. It needs only the gallery, so an existing model is calibrated without retraining.

The threshold is a quantile of that distance on held-out in-distribution faces (faces the gallery does
not contain). The held-out faces are split alternately in two: the threshold comes from one half and the
false-flag rate is measured on the other, so the stored rate is not measured on the data that set it.
Everything is stored in the card under ``out_of_distribution`` (an extra key, kept by older readers).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.nets.card import ModelCard
from app.nets.gallery import Gallery

__all__ = [
    "CARD_KEY",
    "STATISTIC",
    "OodCalibration",
    "OodResult",
    "OodScorer",
    "calibrate",
    "card_section",
    "read_calibration",
    "scorer_for",
    "with_calibration",
]

CARD_KEY = "out_of_distribution"
STATISTIC = "nearest_gallery_mahalanobis"
DEFAULT_SHRINKAGE = 0.01
DEFAULT_QUANTILE = 0.99
MIN_HELD_OUT = 10


@dataclass(frozen=True)
class OodCalibration:
    """What the card stores: the statistic, its threshold and how that threshold was measured."""

    threshold: float
    quantile: float
    shrinkage: float
    n_calibration: int
    n_evaluation: int
    false_flag_rate: float  # share of the evaluation half above the threshold
    source: str  # which held-out faces, in words
    statistic: str = STATISTIC
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. distances of known real photos

    def to_json(self) -> dict[str, Any]:
        data = {
            "statistic": self.statistic, "threshold": round(self.threshold, 4), "quantile": self.quantile,
            "shrinkage": self.shrinkage, "n_calibration": self.n_calibration, "n_evaluation": self.n_evaluation,
            "false_flag_rate": round(self.false_flag_rate, 4), "source": self.source,
        }
        data.update(self.extra)
        return data


@dataclass(frozen=True)
class OodResult:
    """One face's verdict, as the API and the case page show it."""

    distance: float
    threshold: float
    flagged: bool
    false_flag_rate: float
    statistic: str = STATISTIC

    def to_json(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "distance": round(self.distance, 4), "threshold": round(self.threshold, 4),
                "statistic": self.statistic, "false_flag_rate": round(self.false_flag_rate, 4)}


class OodScorer:
    """Whitens the gallery once; then a query costs one (N, 512) distance computation."""

    def __init__(self, gallery: Gallery, shrinkage: float = DEFAULT_SHRINKAGE) -> None:
        embeddings = gallery.embeddings.astype(np.float64)
        classes = np.unique(gallery.label_indices)
        means = np.zeros((int(gallery.label_indices.max()) + 1, embeddings.shape[1]))
        for c in classes:
            means[c] = embeddings[gallery.label_indices == c].mean(axis=0)
        centred = embeddings - means[gallery.label_indices]
        covariance = centred.T @ centred / max(1, len(centred) - len(classes))
        dim = covariance.shape[0]
        covariance += shrinkage * np.trace(covariance) / dim * np.eye(dim)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        self.whiten = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12))  # x @ whiten: identity covariance
        self.gallery_white = embeddings @ self.whiten
        self._gallery_sq = (self.gallery_white**2).sum(axis=1)
        self.shrinkage = shrinkage

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """(M,) whitened Euclidean distance from each raw embedding to its nearest gallery embedding."""
        white = np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) @ self.whiten
        squared = (white**2).sum(axis=1)[:, None] + self._gallery_sq[None, :] - 2.0 * white @ self.gallery_white.T
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def calibrate(
    scorer: OodScorer,
    held_out: np.ndarray,
    *,
    source: str,
    quantile: float = DEFAULT_QUANTILE,
    extra: dict[str, Any] | None = None,
) -> OodCalibration:
    """Threshold = ``quantile`` of the distances of every other held-out face; false-flag rate on the rest."""
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
    distances = scorer.distances(held_out)
    if len(distances) < 4:
        raise ValueError(f"calibration needs at least 4 held-out faces, got {len(distances)}")  # 2 per half
    fit, check = distances[0::2], distances[1::2]
    threshold = float(np.quantile(fit, quantile))
    return OodCalibration(
        threshold=threshold, quantile=quantile, shrinkage=scorer.shrinkage, n_calibration=len(fit),
        n_evaluation=len(check), false_flag_rate=float(np.mean(check > threshold)), source=source,
        extra=dict(extra or {}),
    )


def card_section(gallery: Gallery, held_out: np.ndarray, *, source: str) -> dict[str, Any]:
    """``{CARD_KEY: calibration}`` for the trainer's card, or ``{}`` when too few held-out faces exist
    (a tiny test run): no threshold is better than one set by two faces."""
    if len(held_out) < MIN_HELD_OUT:
        return {}
    return {CARD_KEY: calibrate(scorer_for(gallery), held_out, source=source).to_json()}


def read_calibration(card: ModelCard) -> OodCalibration | None:
    """The card's calibration, or None for a card without one (or one the app cannot interpret)."""
    raw = card.extra.get(CARD_KEY)
    if not isinstance(raw, dict) or raw.get("statistic") != STATISTIC:
        return None
    try:
        known = {"statistic", "threshold", "quantile", "shrinkage", "n_calibration", "n_evaluation",
                 "false_flag_rate", "source"}
        return OodCalibration(
            threshold=float(raw["threshold"]), quantile=float(raw["quantile"]), shrinkage=float(raw["shrinkage"]),
            n_calibration=int(raw["n_calibration"]), n_evaluation=int(raw["n_evaluation"]),
            false_flag_rate=float(raw["false_flag_rate"]), source=str(raw.get("source", "")),
            extra={k: v for k, v in raw.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError):
        return None


def with_calibration(card: ModelCard, calibration: OodCalibration) -> ModelCard:
    """A copy of ``card`` carrying ``calibration``."""
    return dataclasses.replace(card, extra={**card.extra, CARD_KEY: calibration.to_json()})


_SCORERS: weakref.WeakKeyDictionary[Gallery, OodScorer] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def scorer_for(gallery: Gallery, shrinkage: float = DEFAULT_SHRINKAGE) -> OodScorer:
    """One scorer per loaded gallery (the whitening is computed once, on first use)."""
    with _LOCK:
        scorer = _SCORERS.get(gallery)
        if scorer is None or scorer.shrinkage != shrinkage:
            scorer = OodScorer(gallery, shrinkage)
            _SCORERS[gallery] = scorer
        return scorer


def assess(card: ModelCard, gallery: Gallery | None, embedding: np.ndarray) -> OodResult | None:
    """The verdict for one raw embedding, or None when the model has no gallery or no calibration."""
    calibration = read_calibration(card)
    if calibration is None or gallery is None:
        return None
    distance = float(scorer_for(gallery, calibration.shrinkage).distances(embedding)[0])
    return OodResult(distance=distance, threshold=calibration.threshold, flagged=distance > calibration.threshold,
                     false_flag_rate=calibration.false_flag_rate)
