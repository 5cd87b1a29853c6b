"""Similarity maps on ground truth (thesis 6.4.3): does a map of "why are these two faces alike?" point at
the feature they share?

For a pair of synthetic faces of one syndrome, the map of face A under the objective "cosine similarity of
A's embedding to B's" (:meth:`app.explain.objectives.Objective.similarity`, the ranking's own quantity) is
scored with the localisation metrics against A's mask of the shared feature. The control is the same face
A paired with a face of *another* syndrome: then no feature is shared, and a method that localises A's
feature just as well is showing A's salient parts, not the similarity.

Pairs are formed deterministically: each face with the next face of its class (same) and with the face at the
same position of the next class (different).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from app.evaluate import localisation
from app.evaluate.benchmark import BenchmarkFace

__all__ = ["similarity_localisation"]


def _embedding(network: nn.Module, crop: np.ndarray) -> np.ndarray:
    from app.explain.engine import prepare_input

    with torch.no_grad():
        return network(prepare_input(crop))[1][0].numpy()


def pairs(faces: Sequence[BenchmarkFace]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(same-syndrome pairs, different-syndrome pairs) as (face, reference) indices."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, face in enumerate(faces):
        by_class[face.label].append(i)
    classes = list(by_class)
    same, different = [], []
    for c, label in enumerate(classes):
        members = by_class[label]
        other = by_class[classes[(c + 1) % len(classes)]] if len(classes) > 1 else []
        for position, i in enumerate(members):
            if len(members) > 1:
                same.append((i, members[(position + 1) % len(members)]))
            if other:
                different.append((i, other[position % len(other)]))
    return same, different


def similarity_localisation(explainer: Any, network: nn.Module, faces: Sequence[BenchmarkFace],
                            methods: Sequence[str], *, tolerance: int = localisation.DEFAULT_TOLERANCE_PX,
                            seed: int = 0, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Per method: localisation of similarity maps for same-syndrome pairs and for different-syndrome pairs.

    ``progress`` gets the fraction of pairs done as each pair's maps finish (an evaluation job's heartbeat: on an
    iResNet-50 the pairs take minutes)."""
    from app.explain.objectives import Objective

    same, different = pairs(faces)
    if not same:
        return {}
    embeddings = [_embedding(network, face.crop) for face in faces]
    scores: dict[str, dict[str, dict[str, list[float]]]] = {
        m: {"same": defaultdict(list), "different": defaultdict(list)} for m in methods}
    total, done = len(same) + len(different), 0
    for group, group_pairs in (("same", same), ("different", different)):
        for i, j in group_pairs:
            objective = Objective.similarity(embeddings[j], name=f"similarity:image:{faces[j].image_id}")
            maps = explainer.explain(
                faces[i].crop, objective=objective, methods=list(methods),
                on_progress=None if progress is None else lambda f, done=done: progress((done + f) / total))
            done += 1
            for method in methods:
                result = localisation.score_map(maps[method], faces[i].mask, tolerance)
                for key in ("pointing", "mass", "rank"):
                    scores[method][group][key].append(getattr(result, key))
    out: dict[str, Any] = {"pairs": {"same": len(same), "different": len(different)}, "methods": {}}
    for method in methods:
        out["methods"][method] = {
            group: {k: {key: round(v, 6) if isinstance(v, float) else v
                        for key, v in localisation.bootstrap_ci(values, seed=seed).to_dict().items()}
                    for k, values in scores[method][group].items()}
            for group in ("same", "different") if scores[method][group]}
    return out
