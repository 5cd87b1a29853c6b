"""Complexity of a map: how concentrated is it? (sparseness, Chalasani et al. ICML 2020; complexity,
Bhatt et al. IJCAI 2020).

Why: a map that spreads its relevance thinly over every pixel is hard to read, however faithful it is; one
that puts it on a few pixels is easy to read and easy to over-read. Both are computed on ``|map|``:

* **sparseness**: the Gini index of ``|map|`` (0 for a flat map, → 1 when one pixel holds everything);
* **complexity**: the Shannon entropy (nats) of ``|map| / Σ|map|`` (log N for a flat map, 0 for one pixel).

Reference lines: the flat map (Gini 0, entropy log N) and the ground-truth mask itself read as a map (what a
map that marked exactly the feature would score). Quantus (``Sparseness``, ``Complexity``) is the reference
implementation; ``tests/evaluate/test_quantus.py`` shows equal values on the same arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["complexity", "sparseness"]

#: Added to every |value| before the Gini index, as Quantus does (a map of zeros then scores 0, not 0/0).
_GINI_EPS = 1e-7


def _magnitude(attribution: np.ndarray) -> np.ndarray:
    values = np.abs(np.asarray(attribution, dtype=np.float64)).ravel()
    if not np.isfinite(values).all():
        raise ValueError("the map has non-finite values")
    top = values.max()
    return values / top if top > 0 else values  # scale-free: the same map at any scale scores the same


def sparseness(attribution: np.ndarray) -> float:
    """Gini index of ``|map|`` scaled to max 1 (0: flat; near 1: one pixel)."""
    values = np.sort(_magnitude(attribution) + _GINI_EPS)
    n = values.size
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * values) / (n * values.sum()))


def complexity(attribution: np.ndarray) -> float:
    """Entropy (nats) of the distribution ``|map| / Σ|map|`` (log N for a flat map; a map of zeros: log N)."""
    values = _magnitude(attribution)
    total = values.sum()
    if total == 0:
        return float(np.log(values.size))
    p = values / total
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())
