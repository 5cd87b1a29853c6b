"""Fusing the face ranking with the phenotype ranking: one conditional-logit model with two weights.

The combined score of syndrome k for a case is the utility ``u_k = w_face * face_k + w_pheno * pheno_k``,
where ``face_k`` is the quantity that orders the face ranking (``similarity``: 1 - cosine distance to the
syndrome's nearest gallery image) and ``pheno_k`` the phenotype score (:mod:`app.nets.phenotype`). The
weights are fitted by maximum likelihood of the conditional logit ``P(k | case) = softmax_k(u_k)`` (McFadden;
the multinomial model with shared coefficients that PEDIA-style rankers use): each case contributes the
probability its true syndrome gets among all candidates, so the weights are exactly those that rank the
truth high, and the scale of each score is learnt, not guessed. Newton's method on the concave
log-likelihood, with a small ridge so that separable data still gives finite weights.

Ranking without entered terms stays exactly the face ranking: callers do not fuse at all then (and with
``pheno = 0`` everywhere the utilities would order the syndromes as ``face`` does anyway).

Fitted on held-out synthetic cases with simulated annotations (``gestaltlens phenotype fit``); the card
stores the weights and what they were fitted on, the data file beside it the per-case scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["METHOD", "Fusion", "fit_conditional_logit", "rank_order", "top_k_hits"]

METHOD = "conditional_logit"


@dataclass(frozen=True)
class Fusion:
    face_weight: float
    phenotype_weight: float
    face_feature: str = "similarity"
    method: str = METHOD
    fitted_on: dict[str, Any] = field(default_factory=dict)
    data: str | None = None  # the file (in the model folder) holding the fitted per-case scores

    def utilities(self, face: np.ndarray, phenotype: np.ndarray) -> np.ndarray:
        face, phenotype = np.asarray(face, np.float64), np.asarray(phenotype, np.float64)
        return self.face_weight * face + self.phenotype_weight * phenotype

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "face_feature": self.face_feature,
                "weights": {"face": self.face_weight, "phenotype": self.phenotype_weight},
                "fitted_on": self.fitted_on, "data": self.data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fusion:
        if data.get("method") != METHOD:
            raise ValueError(f"unknown fusion method {data.get('method')!r} (known: {METHOD})")
        weights = data["weights"]
        return cls(face_weight=float(weights["face"]), phenotype_weight=float(weights["phenotype"]),
                   face_feature=str(data.get("face_feature", "similarity")), fitted_on=dict(data.get("fitted_on", {})),
                   data=data.get("data"))


def _log_likelihood(weights: np.ndarray, features: np.ndarray,
                    truth: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Log-likelihood, gradient and Hessian of the conditional logit; ``features`` (N, K, F)."""
    utilities = features @ weights  # (N, K)
    utilities -= utilities.max(axis=1, keepdims=True)
    probs = np.exp(utilities)
    probs /= probs.sum(axis=1, keepdims=True)
    rows = np.arange(len(truth))
    loglik = float(np.sum(np.log(np.maximum(probs[rows, truth], 1e-300))))
    mean = np.einsum("nk,nkf->nf", probs, features)  # expected features under the model
    gradient = (features[rows, truth] - mean).sum(axis=0)
    centred = features - mean[:, None, :]
    hessian = -np.einsum("nk,nkf,nkg->fg", probs, centred, centred)
    return loglik, gradient, hessian


def fit_conditional_logit(face: np.ndarray, phenotype: np.ndarray, truth: np.ndarray, *, ridge: float = 1e-3,
                          max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, dict[str, float]]:
    """Weights ``[w_face, w_pheno]`` maximising the conditional-logit likelihood (minus ``ridge * |w|^2``)."""
    features = np.stack([np.asarray(face, np.float64), np.asarray(phenotype, np.float64)], axis=-1)
    truth = np.asarray(truth, dtype=np.int64)
    if features.ndim != 3 or features.shape[0] != truth.shape[0] or len(truth) == 0:
        raise ValueError("face and phenotype must be (cases, syndromes) arrays matching the truth vector")
    weights = np.zeros(2)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported below)
        loglik, gradient, hessian = _log_likelihood(weights, features, truth)
        gradient -= 2 * ridge * weights
        hessian -= 2 * ridge * np.eye(2)
        step = np.linalg.solve(hessian, -gradient)
        # Newton with step halving: the penalised objective never decreases.
        scale = 1.0
        objective = loglik - ridge * float(weights @ weights)
        while scale > 1e-8:
            candidate = weights + scale * step
            value = _log_likelihood(candidate, features, truth)[0] - ridge * float(candidate @ candidate)
            if value >= objective - 1e-12:
                break
            scale /= 2
        weights = weights + scale * step
        if float(np.abs(scale * step).max()) < tol:
            break
    loglik = _log_likelihood(weights, features, truth)[0]
    null = -float(len(truth) * np.log(features.shape[1]))
    return weights, {"log_likelihood": loglik, "null_log_likelihood": null, "iterations": float(iterations)}


def rank_order(scores: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Candidate indices best first (higher score first; ties by ``tiebreak`` ascending, then by index)."""
    scores = np.asarray(scores, np.float64)
    secondary = np.zeros_like(scores) if tiebreak is None else np.asarray(tiebreak, np.float64)
    return np.lexsort((np.arange(len(scores)), secondary, -scores))


def top_k_hits(scores: np.ndarray, truth: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: is the truth among the first ``k`` of each row's ranking?"""
    hits = np.zeros(len(truth), dtype=bool)
    for i, row in enumerate(np.asarray(scores)):
        order = rank_order(row, None if tiebreak is None else tiebreak[i])
        hits[i] = int(truth[i]) in order[:k].tolist()
    return hits
