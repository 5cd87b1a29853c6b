"""Robustness of a map to small input noise: max- and average-sensitivity (Yeh et al., NeurIPS 2019) and a
local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018).

Why: a clinician reads one map of one photo. If the same photo with imperceptible noise gives a different
map, that map cannot be read in detail. For ``k`` noisy copies ``x + δ`` of a face (δ uniform in
[−r, r] per value of the normalised input; r = 0.02 is ≈ 2.5 grey levels):

* **sensitivity** ``‖Φ(x) − Φ(x + δ)‖_F / ‖Φ(x)‖_F``; max-sensitivity is its maximum over the copies,
  avg-sensitivity its mean (Quantus' ``MaxSensitivity`` / ``AvgSensitivity`` with Frobenius norms);
* **local Lipschitz estimate** ``max ‖Φ(x) − Φ(x + δ)‖_2 / ‖δ‖_2`` (map units per input unit, so only
  comparable within one method).

Reference line: the same ratios between *faces* (face i's map against face j's map, and
``‖x_i − x_j‖`` for Lipschitz), the change that means "another face". A map that changes under noise as much
as between faces says nothing about this face. Arrays in, floats out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["NOISE", "between_faces_sensitivity", "noisy_copies", "sensitivity"]

#: Half-width of the uniform noise on the [-1, 1] input.
NOISE = 0.02


def noisy_copies(image: np.ndarray, samples: int, *, noise: float = NOISE, seed: int = 0) -> np.ndarray:
    """``samples`` copies of a (C, H, W) image with uniform noise in [−noise, noise] (seeded)."""
    rng = np.random.default_rng(seed)
    image = np.asarray(image, dtype=np.float32)
    return (image[None] + rng.uniform(-noise, noise, size=(samples, *image.shape))).astype(np.float32)


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64).ravel()))


def sensitivity(original: np.ndarray, perturbed: Sequence[np.ndarray], image: np.ndarray | None = None,
                perturbed_images: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """max- and avg-sensitivity of one map, and the local Lipschitz estimate when the inputs are given."""
    base = _norm(original)
    ratios = [(_norm(np.asarray(original, np.float64) - np.asarray(p, np.float64)) / base) if base > 0 else 0.0
              for p in perturbed]
    out = {"max_sensitivity": float(np.max(ratios)), "avg_sensitivity": float(np.mean(ratios))}
    if image is not None and perturbed_images is not None:
        out["lipschitz"] = float(max(
            _norm(np.asarray(original, np.float64) - np.asarray(p, np.float64)) /
            max(_norm(np.asarray(image, np.float64) - np.asarray(q, np.float64)), 1e-12)
            for p, q in zip(perturbed, perturbed_images, strict=True)))
    return out


def between_faces_sensitivity(maps: Sequence[np.ndarray], images: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Per face: the mean over other faces of ‖Φ_i − Φ_j‖ / ‖Φ_i‖ and ‖Φ_i − Φ_j‖ / ‖x_i − x_j‖ (the reference)."""
    out: dict[str, list[float]] = {"sensitivity": [], "lipschitz": []}
    for i, (a, x) in enumerate(zip(maps, images, strict=True)):
        rel, lip = [], []
        for j, (b, y) in enumerate(zip(maps, images, strict=True)):
            if i == j:
                continue
            distance = _norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
            rel.append(distance / max(_norm(a), 1e-12))
            lip.append(distance / max(_norm(np.asarray(x, np.float64) - np.asarray(y, np.float64)), 1e-12))
        if rel:
            out["sensitivity"].append(float(np.mean(rel)))
            out["lipschitz"].append(float(np.mean(lip)))
    return out
