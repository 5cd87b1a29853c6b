"""The scorecard's per-face pass: every method's map of every benchmark face, and every per-map metric on it.

Why one pass: a map is the expensive part (an occlusion or IG map costs hundreds of forward passes), so each
is computed once and every metric reads it; the maps of the faces the sanity and robustness checks use are
kept for them. Per face, besides the maps: the head's prediction, the context-occlusion test, and the
subset drops of faithfulness correlation (one set of perturbations shared by every method).

Per map: localisation (pointing, mass, rank, top-k, ROC-AUC), faithfulness in |map| order (deletion,
insertion, ROAD, correlation) and, for signed methods, deletion in signed order beside it,
complexity (sparseness, entropy), context shares and, for IG and DeepLIFT, the completeness error.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from app.evaluate import complexity as complexity_metrics
from app.evaluate import context as ctx_metrics
from app.evaluate import faithfulness, localisation
from app.evaluate.benchmark import BenchmarkFace
from app.evaluate.completeness import completeness, objective_change
from app.evaluate.concordance import Accumulator as RegionConcordance

__all__ = ["COMPLETE_METHODS", "FacePass", "MethodScores", "logits_of", "score_faces", "target_score"]

COMPLETE_METHODS = ("integrated_gradients", "deeplift")
CURVES = ("deletion_morf", "deletion_lerf", "insertion_morf", "insertion_lerf", "road_morf", "road_lerf")
LOCALISATION = ("pointing", "mass", "rank", "top_k", "auc")


def logits_of(network: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Batch of normalised images → logits (N, C), in chunks of 128 (no gradients)."""
    def logits(batch: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(batch), 128):
                chunk = np.ascontiguousarray(batch[start:start + 128], dtype=np.float32)
                out.append(network(torch.from_numpy(chunk))[0].numpy())
        return np.concatenate(out)
    return logits


def target_score(network: nn.Module, target: int) -> Callable[[np.ndarray], np.ndarray]:
    logits = logits_of(network)
    return lambda batch: logits(batch)[:, target]


@dataclass
class MethodScores:
    """One method's per-face values, gathered over the pass (summarised with intervals afterwards)."""

    loc: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    per_class: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    faith: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    faith_signed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    curves: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    curves_signed: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    complexity: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    areas: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    regions: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    complete: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass
class FacePass:
    """Everything the per-face pass measured."""

    methods: dict[str, MethodScores]
    occlusion: dict[str, list[float]]
    correct: dict[str, list[float]]
    mask_complexity: dict[str, list[float]]
    per_image: list[dict[str, Any]]
    kept: dict[int, dict[str, np.ndarray]]  # face index → maps, for the faces asked to keep
    regions: RegionConcordance  # share of each map's mass in the regions of the face's true HPO terms


def _r(value: float) -> float:
    return round(float(value), 6)


def score_faces(network: nn.Module, explainer: Any, faces: Sequence[BenchmarkFace], targets: Sequence[int],
                methods: Sequence[str], *, signed: set[str], options: Any, keep: set[int] = frozenset(),
                progress: Callable[[float, str], None] | None = None) -> FacePass:
    """Maps and per-map metrics of ``methods`` on every face (``targets``: the head's index of each face)."""
    from app.explain.engine import prepare_input

    report = progress or (lambda fraction, message: None)
    seed = options.seed
    scores = {m: MethodScores() for m in methods}
    occl: dict[str, list[float]] = defaultdict(list)
    correct: dict[str, list[float]] = defaultdict(list)
    mask_complexity: dict[str, list[float]] = defaultdict(list)
    per_image: list[dict[str, Any]] = []
    kept: dict[int, dict[str, np.ndarray]] = {}
    regions = RegionConcordance(seed)
    logits_fn = logits_of(network)
    for n, (face, target) in enumerate(zip(faces, targets, strict=True)):
        x = prepare_input(face.crop)
        image = x[0].numpy()
        logits = logits_fn(image[None])[0]
        correct[face.label].append(float(int(np.argmax(logits)) == target))
        occlusion = ctx_metrics.context_occlusion(logits_fn, image, target)
        for key, value in occlusion.to_dict().items():
            occl[key].append(float(value))
        occl["top1"].append(float(occlusion.rank == 1))
        occl["top1_face_only"].append(float(occlusion.rank_face_only == 1))
        mask_complexity["sparseness"].append(complexity_metrics.sparseness(face.mask))
        mask_complexity["complexity"].append(complexity_metrics.complexity(face.mask))
        started = [time.perf_counter()]
        timing: dict[str, float] = {}

        def on_map(method: str, _: np.ndarray, started: list[float] = started, timing: dict = timing) -> None:
            now = time.perf_counter()
            timing[method] = now - started[0]
            started[0] = now

        maps = explainer.explain(face.crop, target=target, methods=list(methods), on_map=on_map)
        if n in keep:
            kept[n] = maps
        score = target_score(network, target)
        delta = objective_change(network, x, target) if set(methods) & set(COMPLETE_METHODS) else 0.0
        subsets = faithfulness.random_subsets(image.shape, runs=options.correlation_runs, seed=seed + n) \
            if options.correlation_runs else None
        drops = faithfulness.subset_drops(score, image, subsets) if subsets is not None else None
        row: dict[str, Any] = {"image_id": face.image_id, "label": face.label, "methods": {}}
        for method in methods:
            a, values = scores[method], maps[method]
            t0 = time.perf_counter()
            loc = localisation.score_map(values, face.mask, options.tolerance_px, options.top_k)
            for key in LOCALISATION:
                a.loc[key].append(getattr(loc, key))
                a.per_class[face.label][key].append(getattr(loc, key))
            faith = faithfulness.evaluate_faithfulness(score, image, values, fractions=options.fractions,
                                                       road_percentages=options.road_percentages or None,
                                                       seed=seed)
            for key, value in faith.summary().items():
                if value is not None:
                    a.faith[key].append(value)
            correlation = faithfulness.faithfulness_correlation(values, subsets, drops) \
                if drops is not None else None
            if correlation is not None:
                a.faith["correlation"].append(correlation)
            for name in CURVES:
                curve = getattr(faith, name)
                if curve is not None:
                    a.curves[name].append(list(curve.scores))
            entry = {"pointing": loc.pointing, "mass": _r(loc.mass), "rank": _r(loc.rank), "top_k": _r(loc.top_k),
                     "auc": _r(loc.auc), "deletion_morf_auc": _r(faith.deletion_morf.auc),
                     "deletion_gap": _r(faith.deletion_gap), "insertion_gap": _r(faith.insertion_gap)}
            if faith.road_gap is not None:
                entry["road_gap"] = _r(faith.road_gap)
            if correlation is not None:
                entry["correlation"] = _r(correlation)
            if method in signed:  # deletion in signed order beside the ranking's |map| order (labelled)
                morf, lerf = (faithfulness.deletion_curve(score, image, values, options.fractions, order="signed",
                                                          most_relevant_first=first) for first in (True, False))
                a.faith_signed["deletion_morf_auc"].append(morf.auc)
                a.faith_signed["deletion_lerf_auc"].append(lerf.auc)
                a.faith_signed["deletion_gap"].append(lerf.auc - morf.auc)
                a.curves_signed["deletion_morf"].append(list(morf.scores))
                a.curves_signed["deletion_lerf"].append(list(lerf.scores))
                entry["deletion_gap_signed"] = _r(lerf.auc - morf.auc)
            a.complexity["sparseness"].append(complexity_metrics.sparseness(values))
            entry["sparseness"] = _r(a.complexity["sparseness"][-1])
            a.complexity["complexity"].append(complexity_metrics.complexity(values))
            regions.add(method, values, face.label)
            shares = ctx_metrics.context_shares(values)
            for key, value in shares.areas.items():
                a.areas[key].append(value)
            a.areas["context"].append(shares.context)
            for key, value in shares.regions.items():
                a.regions[key].append(value)
            entry["context"] = _r(shares.context)
            entry["hair_background"] = _r(shares.areas["hair"] + shares.areas["background"])
            if method in COMPLETE_METHODS:
                error = completeness(values, delta).relative_error
                a.complete.append(error)
                entry["completeness_error"] = _r(error)
            a.seconds.append(timing.get(method, 0.0) + time.perf_counter() - t0)
            row["methods"][method] = entry
        per_image.append(row)
        report((n + 1) / len(faces), f"face {n + 1}/{len(faces)}")
    return FacePass(methods=scores, occlusion=occl, correct=correct, mask_complexity=mask_complexity,
                    per_image=per_image, kept=kept, regions=regions)
