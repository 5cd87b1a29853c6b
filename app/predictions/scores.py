"""The one score a ranking is ordered by, named, as every page and the history print it.

A gallery ranking is ordered by similarity (1 − cosine distance to the syndrome's nearest gallery face); the
classifier's softmax probability is a different quantity and is never printed as "the" score beside that order
(issue 24: the history said "(0.46)" — the probability — while the ranking showed similarity 0.780).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def ordering_score(row: Mapping[str, Any], ranked_by: str | None) -> str | None:
    """``similarity 0.780`` for a gallery ranking, ``classifier probability 45.6%`` otherwise; None if unknown."""
    if ranked_by == "gallery":
        distance = row.get("distance")
        return f"similarity {1 - float(distance):.3f}" if isinstance(distance, int | float) else None
    score = row.get("score")
    return f"classifier probability {100 * float(score):.1f}%" if isinstance(score, int | float) else None
