"""Per-participant orders: labels for blinded items and reproducible permutations.

A permutation depends only on (study seed, member, case), so it can be redrawn for an audit; it is also
stored, so changing this code never changes a running study.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def map_label(index: int) -> str:
    """0 → "A", 25 → "Z", 26 → "AA" (a study has at most ten methods, but never fail)."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(65 + rest) + label
    return label


def draw_order(items: Sequence[T], *, seed: int, rater_id: int, case_id: str) -> list[T]:
    """A permutation of ``items`` that depends only on (study seed, member, case): the same inputs always
    give the same order (the order is stored as well, so a change of this function changes no study)."""
    digest = hashlib.sha256(f"{seed}:{rater_id}:{case_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    return [items[i] for i in rng.permutation(len(items))]
