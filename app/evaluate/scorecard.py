"""The scorecard: every metric of every method for one model on one benchmark set, as plain JSON.

This is what the CLI (``gestaltlens evaluate``), the evaluation job and the Evaluation page share: one
function, so the page and the command give the same numbers for the same model and spec. Per method:

* localisation (pointing game, relevance mass and rank accuracy) against the ground-truth mask, with 95 %
  bootstrap intervals over faces, per class, and beside it the two chance levels (the mask's area share and
  the centre-prior control map scored the same way);
* faithfulness: deletion and insertion curves (MoRF, LeRF) and ROAD, mean curves and AUCs;
* face vs context: share of |map| in face, ears, hair, background, neck and the vocabulary's regions;
* completeness error for integrated gradients and DeepLIFT;
* the cascading-randomisation sanity check on a subset of faces.

Plus, per model, the context-occlusion test of the prediction and the head's per-class accuracy on the set.
Timings (seconds per face and method) are kept apart under ``timings``: they are not results.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from app.evaluate import context as ctx_metrics
from app.evaluate import faithfulness, localisation, sanity
from app.evaluate.benchmark import BenchmarkSet
from app.evaluate.completeness import completeness, objective_change, steps_for_tolerance
from app.evaluate.concordance import Accumulator as RegionConcordance

__all__ = ["FORMAT", "EvaluationOptions", "evaluate_model"]

FORMAT = "gestaltlens-evaluation/1"
COMPLETE_METHODS = ("integrated_gradients", "deeplift")
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class EvaluationOptions:
    """Everything besides the benchmark faces that fixes the numbers (stored with them)."""

    tolerance_px: int = localisation.DEFAULT_TOLERANCE_PX
    fractions: tuple[float, ...] = faithfulness.DEFAULT_FRACTIONS
    road_percentages: tuple[float, ...] = faithfulness.ROAD_PERCENTAGES
    sanity_faces: int = 4
    sanity_methods: tuple[str, ...] = ()  # empty: every evaluated method
    seed: int = 0
    #: methods whose similarity maps are scored on same- vs different-syndrome pairs (those evaluated)
    similarity_methods: tuple[str, ...] = ("gradcam", "saliency", "integrated_gradients")
    #: integrated gradients' completeness target for the step rule (on the first face); 0 = no step rule
    ig_tolerance: float = 1e-3

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _r(value: float) -> float:
    return round(float(value), 6)


def _interval(values: Sequence[float], seed: int) -> dict[str, float]:
    return {k: (_r(v) if isinstance(v, float) else v)
            for k, v in localisation.bootstrap_ci(values, seed=seed).to_dict().items()}


def _scorer(network: nn.Module, target: int) -> Callable[[np.ndarray], np.ndarray]:
    def score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))[0][:, target].numpy()
    return score


def _logits(network: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def logits(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))[0].numpy()
    return logits


def _spread(faces: list[Any], n: int) -> list[int]:
    """Indices of ``n`` faces taken round-robin over classes (so a small subset still covers classes)."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, face in enumerate(faces):
        by_class[face.label].append(i)
    order: list[int] = []
    depth = 0
    while len(order) < min(n, len(faces)):
        for indices in by_class.values():
            if depth < len(indices) and len(order) < n:
                order.append(indices[depth])
        depth += 1
    return sorted(order)


@dataclass
class _Acc:
    loc: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    per_class: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    faith: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    curves: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    areas: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    regions: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    complete: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def evaluate_model(network: nn.Module, labels: Sequence[str], benchmark: BenchmarkSet, methods: Sequence[str], *,
                   gradcam_layer: str = "layer4", options: EvaluationOptions = EvaluationOptions(),
                   progress: Progress | None = None) -> dict[str, Any]:
    """The scorecard (JSON-ready dict) of ``methods`` for ``network`` on ``benchmark``'s faces.

    ``labels`` are the head's class ids in order; a face whose class the head does not know is left out.
    """
    from app.explain.engine import Explainer, prepare_input
    from app.explain.registry import get_method

    methods = list(dict.fromkeys(methods))
    for method in methods:
        get_method(method)
    network = network.eval()
    report = progress or (lambda fraction, message: None)
    faces = [f for f in benchmark.faces if f.label in labels]
    if not faces:
        raise ValueError("no benchmark face belongs to a class this model knows")
    explainer = Explainer(network, gradcam_layer=gradcam_layer)
    seed = options.seed
    acc = {m: _Acc() for m in methods}
    prior = localisation.centre_prior(112)
    chance: dict[str, list[float]] = defaultdict(list)
    occl: dict[str, list[float]] = defaultdict(list)
    correct: dict[str, list[float]] = defaultdict(list)
    per_image = []
    regions = RegionConcordance(seed)  # issue 23: region concordance (app/evaluate/concordance.py)
    sanity_share = 0.3
    for n, face in enumerate(faces):
        target = list(labels).index(face.label)
        x = prepare_input(face.crop)
        image = x[0].numpy()
        logits = _logits(network)(image[None])[0]
        correct[face.label].append(float(int(np.argmax(logits)) == target))
        occlusion = ctx_metrics.context_occlusion(_logits(network), image, target)
        for key, value in occlusion.to_dict().items():
            occl[key].append(float(value))
        occl["top1"].append(float(occlusion.rank == 1))
        occl["top1_face_only"].append(float(occlusion.rank_face_only == 1))
        control = localisation.score_map(prior, face.mask, options.tolerance_px)
        for key in ("pointing", "mass", "rank", "area_share", "pointing_chance"):
            chance[key].append(getattr(control, key))
        started = [time.perf_counter()]
        timing: dict[str, float] = {}

        def on_map(method: str, _: np.ndarray, started: list[float] = started, timing: dict = timing) -> None:
            now = time.perf_counter()
            timing[method] = now - started[0]
            started[0] = now

        maps = explainer.explain(face.crop, target=target, methods=methods, on_map=on_map)
        score = _scorer(network, target)
        delta = objective_change(network, x, target) if set(methods) & set(COMPLETE_METHODS) else 0.0
        row: dict[str, Any] = {"image_id": face.image_id, "label": face.label, "methods": {}}
        for method in methods:
            a, values = acc[method], maps[method]
            t0 = time.perf_counter()
            loc = localisation.score_map(values, face.mask, options.tolerance_px)
            for key in ("pointing", "mass", "rank"):
                a.loc[key].append(getattr(loc, key))
                a.per_class[face.label][key].append(getattr(loc, key))
            faith = faithfulness.evaluate_faithfulness(score, image, values, fractions=options.fractions,
                                                       road_percentages=options.road_percentages or None,
                                                       seed=seed)
            for key, value in faith.summary().items():
                if value is not None:
                    a.faith[key].append(value)
            for name in ("deletion_morf", "deletion_lerf", "insertion_morf", "insertion_lerf", "road_morf",
                         "road_lerf"):
                curve = getattr(faith, name)
                if curve is not None:
                    a.curves[name].append(list(curve.scores))
            regions.add(method, values, face.label)
            shares = ctx_metrics.context_shares(values)
            for key, value in shares.areas.items():
                a.areas[key].append(value)
            a.areas["context"].append(shares.context)
            for key, value in shares.regions.items():
                a.regions[key].append(value)
            entry = {"pointing": loc.pointing, "mass": _r(loc.mass), "rank": _r(loc.rank),
                     "deletion_morf_auc": _r(faith.deletion_morf.auc), "context": _r(shares.context)}
            if method in COMPLETE_METHODS:
                error = completeness(values, delta).relative_error
                a.complete.append(error)
                entry["completeness_error"] = _r(error)
            a.seconds.append(timing.get(method, 0.0) + time.perf_counter() - t0)
            row["methods"][method] = entry
        per_image.append(row)
        report((n + 1) / len(faces) * (1 - sanity_share), f"face {n + 1}/{len(faces)}")

    step_rule = None
    if "integrated_gradients" in methods and options.ig_tolerance > 0:
        face = faces[0]
        target = list(labels).index(face.label)
        delta = objective_change(network, prepare_input(face.crop), target)

        at = 1 - sanity_share  # the per-face part is done; the same fraction again is the job's heartbeat

        def ig_error(steps: int) -> float:
            ig = explainer.explain(face.crop, target=target, methods=["integrated_gradients"],
                                   params={"integrated_gradients": {"steps": steps}},
                                   on_progress=lambda f: report(at, f"IG step rule: {steps} steps"))[
                                       "integrated_gradients"]
            return completeness(ig, delta).relative_error

        step_rule = {"image_id": face.image_id,
                     **steps_for_tolerance(ig_error, options.ig_tolerance, start=50, maximum=800).to_dict()}

    from app.evaluate.similarity import similarity_localisation

    similarity_methods = [m for m in options.similarity_methods if m in methods]
    similarity = similarity_localisation(
        explainer, network, faces, similarity_methods, tolerance=options.tolerance_px, seed=seed,
        progress=lambda f: report(1 - sanity_share, f"similarity maps: {f:.0%}")) if similarity_methods else {}

    sanity_methods = [m for m in (options.sanity_methods or methods) if m in methods]
    sanity_result: dict[str, Any] = {}
    chosen = _spread(faces, options.sanity_faces)
    if sanity_methods and len(chosen) >= 2:
        explainers: dict[int, Explainer] = {id(network): explainer}

        def explain(net: nn.Module, crop: np.ndarray, target: int) -> dict[str, np.ndarray]:
            if id(net) not in explainers:
                explainers.clear()
                explainers[id(network)] = explainer
                explainers[id(net)] = Explainer(net, gradcam_layer=gradcam_layer)
            return explainers[id(net)].explain(crop, target=target, methods=sanity_methods)

        results = sanity.run_sanity(
            explain, network, [faces[i].crop for i in chosen], [list(labels).index(faces[i].label) for i in chosen],
            sanity_methods, seed=seed,
            progress=lambda f: report(1 - sanity_share + sanity_share * f, "sanity checks"))
        sanity_result = {m: _round_tree(r.to_dict()) for m, r in results.items()}

    out_methods = {}
    for method in methods:
        a = acc[method]
        out_methods[method] = {
            "localisation": {k: _interval(v, seed) for k, v in a.loc.items()},
            "per_class": {c: {k: _r(np.mean(v)) for k, v in d.items()} for c, d in sorted(a.per_class.items())},
            "faithfulness": {k: _interval(v, seed) for k, v in a.faith.items()},
            "curves": {k: [_r(x) for x in np.mean(np.asarray(v), axis=0)] for k, v in a.curves.items()},
            "context": {"areas": {k: _interval(v, seed) for k, v in a.areas.items()},
                        "regions": {k: _r(np.mean(v)) for k, v in a.regions.items()}},
            "completeness_error": _interval(a.complete, seed) if a.complete else None,
        }
    report(1.0, "done")
    return {
        "format": FORMAT,
        "benchmark": {**benchmark.spec, "n_faces": len(faces), "skipped": benchmark.skipped},
        "options": options.to_dict(),
        "methods": methods,
        "chance": {"area_share": _interval(chance["area_share"], seed),
                   "pointing_chance": _interval(chance["pointing_chance"], seed),
                   "centre_prior": {k: _interval(chance[k], seed) for k in ("pointing", "mass", "rank")}},
        "area_fraction": {k: _r(v) for k, v in ctx_metrics.context_shares(np.ones((112, 112))).areas.items()},
        "scores": out_methods,
        "sanity": sanity_result,
        "context_occlusion": {k: _interval(v, seed) for k, v in occl.items()},
        "ig_step_rule": _round_tree(step_rule),
        "similarity": similarity,
        "region_concordance": regions.summary(),
        "accuracy": {c: _r(np.mean(v)) for c, v in sorted(correct.items())},
        "per_image": per_image,
        "timings": {m: _r(np.mean(acc[m].seconds)) for m in methods},
    }


def _round_tree(value: Any) -> Any:
    if isinstance(value, float):
        return _r(value)
    if isinstance(value, dict):
        return {k: _round_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round_tree(v) for v in value]
    return value
