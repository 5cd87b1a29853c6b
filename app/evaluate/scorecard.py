"""The scorecard: every metric of every method for one model on one benchmark set, as plain JSON.

This is what the CLI (``gestaltlens evaluate``), the evaluation job and the Evaluation page share: one
function, so the page and the command give the same numbers for the same model and spec. It runs in phases,
each its own function, in the order their results are needed:

1. the per-face pass (:mod:`app.evaluate.face_pass`): maps, localisation, faithfulness (|map| order, and
   signed order beside it for signed methods), faithfulness correlation, complexity, context, completeness;
2. the centre-prior control, its width fitted on one half of the faces and scored on the other (both ways);
3. integrated gradients' step rule (its completeness error as the steps double, on the first face);
4. similarity maps on ground truth (:mod:`app.evaluate.similarity`);
5. sanity checks (:mod:`app.evaluate.sanity`) on a subset of faces, reusing their original maps;
6. robustness to small input noise (:mod:`app.evaluate.robustness`) on the same subset.

Progress is shared out over the phases by their expected cost (:mod:`app.evaluate.plan`), not a fixed
fraction. Every number comes with its reference line (area share, fitted centre prior, flat map, mask,
between-faces similarity) and a 95 % bootstrap interval over faces. Timings (seconds per face and method)
are kept apart under ``timings``: they are not results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from app.evaluate import context as ctx_metrics
from app.evaluate import faithfulness, localisation, robustness, sanity
from app.evaluate.benchmark import BenchmarkFace, BenchmarkSet
from app.evaluate.face_pass import FacePass, score_faces
from app.evaluate.plan import Phases, phase_costs

__all__ = ["FORMAT", "EvaluationOptions", "evaluate_model", "independent_methods", "independent_not_run"]

FORMAT = "gestaltlens-evaluation/2"
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class EvaluationOptions:
    """Everything besides the benchmark faces that fixes the numbers (stored with them)."""

    tolerance_px: int = localisation.DEFAULT_TOLERANCE_PX
    top_k: int = localisation.TOP_K
    fractions: tuple[float, ...] = faithfulness.DEFAULT_FRACTIONS
    road_percentages: tuple[float, ...] = faithfulness.ROAD_PERCENTAGES
    correlation_runs: int = faithfulness.CORRELATION_RUNS  # 0: no faithfulness correlation
    sanity_faces: int = 4
    sanity_methods: tuple[str, ...] = ()  # empty: every evaluated method
    independent: bool = True  # Adebayo's independent layer randomisation beside the cascade
    independent_max_passes: float = 2.0  # ... for the methods whose map costs at most this (0: every method)
    random_logit: bool = True
    robustness_samples: int = 3  # noisy copies per face (0: no robustness)
    robustness_noise: float = robustness.NOISE
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


def _round_tree(value: Any) -> Any:
    if isinstance(value, float):
        return _r(value)
    if isinstance(value, dict):
        return {k: _round_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_tree(v) for v in value]
    return value


def spread(faces: Sequence[BenchmarkFace], n: int) -> list[int]:
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


def halves(faces: Sequence[BenchmarkFace]) -> tuple[list[int], list[int]]:
    """Two halves of the faces, alternating within each class (so both halves cover every class)."""
    seen: dict[str, int] = defaultdict(int)
    first, second = [], []
    for i, face in enumerate(faces):
        (first if seen[face.label] % 2 == 0 else second).append(i)
        seen[face.label] += 1
    return first, second


def centre_prior_control(faces: Sequence[BenchmarkFace], tolerance: int, seed: int) -> dict[str, Any]:
    """The strongest centre prior, cross-fitted: σ fitted on each half (max relevance mass), scored on the other.

    Every face is scored by a prior whose width was chosen on faces other than it, so the control's mean is
    comparable with the methods' means over all faces."""
    first, second = halves(faces)
    if not second:  # one face per class and one class: nothing to hold out; fit and score on the same faces
        second = first
    fitted, values = {}, defaultdict(list)
    for fit_on, score_on, name in ((first, second, "first"), (second, first, "second")):
        sigma, masses = localisation.fit_centre_prior([faces[i].mask for i in fit_on])
        fitted[name] = {"sigma_px": sigma, "fitted_on": len(fit_on), "mass_by_sigma": masses}
        prior = localisation.centre_prior(112, sigma_px=sigma)
        for i in score_on:
            scores = localisation.score_map(prior, faces[i].mask, tolerance)
            for key in ("pointing", "mass", "rank", "top_k", "auc"):
                values[key].append(getattr(scores, key))
    return {**{k: _interval(v, seed) for k, v in values.items()}, "fit": _round_tree(fitted)}


def _chance(faces: Sequence[BenchmarkFace], tolerance: int, seed: int) -> dict[str, Any]:
    area = [localisation.area_share(f.mask) for f in faces]
    pointing = [localisation.area_share(localisation.dilate(f.mask, tolerance)) for f in faces]
    return {"area_share": _interval(area, seed), "pointing_chance": _interval(pointing, seed),
            "auc": 0.5, "centre_prior": centre_prior_control(faces, tolerance, seed)}


def ig_step_rule(explainer: Any, network: nn.Module, face: BenchmarkFace, target: int, tolerance: float,
                 report: Callable[[float], None]) -> dict[str, Any]:
    """Integrated gradients' completeness error on one face as its steps double from 50 (until ≤ tolerance)."""
    from app.evaluate.completeness import completeness, objective_change, steps_for_tolerance
    from app.explain.engine import prepare_input

    delta = objective_change(network, prepare_input(face.crop), target)

    def ig_error(steps: int) -> float:
        ig = explainer.explain(face.crop, target=target, methods=["integrated_gradients"],
                               params={"integrated_gradients": {"steps": steps}},
                               on_progress=lambda f: report(min(1.0, steps / 800)))["integrated_gradients"]
        return completeness(ig, delta).relative_error

    return {"image_id": face.image_id, **steps_for_tolerance(ig_error, tolerance, start=50, maximum=800).to_dict()}


def independent_methods(methods: Sequence[str], max_passes: float) -> list[str]:
    """The methods whose map costs at most ``max_passes`` passes (0: all): the independent randomisation's.

    Why a limit: the independent test recomputes every map on 6 more networks per sanity face. For the default
    panel on 4 sanity faces that is 4,704 more passes (the sanity phase 6,552 → 11,256, the run 21,568 → 26,272:
    +22 %, about 39 s at the fitted 8.2 ms a pass, past the 3-minute goal), of which occlusion (121 passes a
    map), IG (50) and SmoothGrad (25) are 4,584; the seven gradient-family methods (1–2 passes a map) cost 120.
    So by default the expensive three get the cascade and the random logit (their verdict does not read the
    independent stages) and the cheap ones get the independent test too. The default 2 sits in the gap between
    the gradient family (≤ 2) and SmoothGrad (25): any limit from 2 to 24 gives the same split."""
    from app.evaluate.plan import map_passes

    return [m for m in methods if max_passes <= 0 or map_passes([m]) <= max_passes]


def independent_not_run(methods: Sequence[str], options: EvaluationOptions) -> dict[str, str]:
    """Method → why it has no independent randomisation (the scorecard and the page say it beside the verdict)."""
    from app.evaluate.plan import map_passes

    if not options.independent:
        return {m: "independent randomisation was turned off" for m in methods}
    run = set(independent_methods(methods, options.independent_max_passes))
    return {m: f"not run: its map costs {map_passes([m]):g} passes, above the {options.independent_max_passes:g} "
               f"the independent test is run for (6 more maps per sanity face); the cascade and the random logit "
               f"give its verdict" for m in methods if m not in run}


class _Explainers:
    """One explainer per network copy (the original's is reused; a randomised copy's lives until the next)."""

    def __init__(self, network: nn.Module, explainer: Any, gradcam_layer: str, methods: Sequence[str]) -> None:
        self.original, self.explainer, self.layer, self.methods = network, explainer, gradcam_layer, list(methods)
        self._other: tuple[int, Any] | None = None

    def __call__(self, net: nn.Module, crop: Any, target: int,
                 methods: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        from app.explain.engine import Explainer

        wanted = list(methods) if methods is not None else self.methods
        if net is self.original:
            return self.explainer.explain(crop, target=target, methods=wanted)
        if self._other is None or self._other[0] != id(net):
            self._other = (id(net), Explainer(net, gradcam_layer=self.layer))
        return self._other[1].explain(crop, target=target, methods=wanted)


def run_sanity_phase(network: nn.Module, explainer: Any, gradcam_layer: str, faces: Sequence[BenchmarkFace],
                     targets: Sequence[int], chosen: Sequence[int], methods: Sequence[str], kept: dict[int, Any],
                     options: EvaluationOptions, report: Callable[[float], None]) -> dict[str, Any]:
    """Cascade, independent stages and random logit on the chosen faces (their original maps reused)."""
    explain = _Explainers(network, explainer, gradcam_layer, methods)
    results = sanity.run_sanity(
        explain, network, [faces[i].crop for i in chosen], [targets[i] for i in chosen], methods,
        original=[kept[i] for i in chosen], independent=options.independent, random_logit=options.random_logit,
        independent_methods=independent_methods(methods, options.independent_max_passes),
        seed=options.seed, progress=report)
    skipped = independent_not_run(methods, options)
    return {m: {**_round_tree(r.to_dict()), "independent_not_run": skipped.get(m)} for m, r in results.items()}


def run_robustness_phase(explainer: Any, faces: Sequence[BenchmarkFace], targets: Sequence[int],
                         chosen: Sequence[int], methods: Sequence[str], kept: dict[int, Any],
                         options: EvaluationOptions, report: Callable[[float], None]) -> dict[str, Any]:
    """Max/avg sensitivity and local Lipschitz per method on the chosen faces, with the between-faces reference."""
    import torch

    from app.explain.engine import prepare_input

    images = {i: prepare_input(faces[i].crop)[0].numpy() for i in chosen}
    values: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in methods}
    for k, i in enumerate(chosen):
        copies = robustness.noisy_copies(images[i], options.robustness_samples, noise=options.robustness_noise,
                                         seed=options.seed + i)
        noisy = [explainer.explain(torch.from_numpy(c[None]), target=targets[i], methods=list(methods))
                 for c in copies]
        for m in methods:
            for key, value in robustness.sensitivity(kept[i][m], [n[m] for n in noisy], images[i],
                                                     list(copies)).items():
                values[m][key].append(value)
        report((k + 1) / len(chosen))
    seed = options.seed
    out: dict[str, Any] = {"faces": len(chosen), "samples": options.robustness_samples,
                           "noise": options.robustness_noise, "methods": {}}
    for m in methods:
        reference = robustness.between_faces_sensitivity([kept[i][m] for i in chosen], [images[i] for i in chosen])
        out["methods"][m] = {**{k: _interval(v, seed) for k, v in values[m].items()},
                             "reference": {k: _interval(v, seed) for k, v in reference.items() if v}}
    return out


def _summarise_methods(passed: FacePass, methods: Sequence[str], seed: int) -> dict[str, Any]:
    out = {}
    for method in methods:
        a = passed.methods[method]
        out[method] = {
            "localisation": {k: _interval(v, seed) for k, v in a.loc.items()},
            "per_class": {c: {k: _r(np.mean(v)) for k, v in d.items()} for c, d in sorted(a.per_class.items())},
            "faithfulness": {k: _interval(v, seed) for k, v in a.faith.items()},
            "faithfulness_signed": {k: _interval(v, seed) for k, v in a.faith_signed.items()} or None,
            "curves": {k: [_r(x) for x in np.mean(np.asarray(v), axis=0)] for k, v in a.curves.items()},
            "curves_signed": {k: [_r(x) for x in np.mean(np.asarray(v), axis=0)]
                              for k, v in a.curves_signed.items()} or None,
            "complexity": {k: _interval(v, seed) for k, v in a.complexity.items()},
            "context": {"areas": {k: _interval(v, seed) for k, v in a.areas.items()},
                        "regions": {k: _r(np.mean(v)) for k, v in a.regions.items()}},
            "completeness_error": _interval(a.complete, seed) if a.complete else None,
        }
    return out


def evaluate_model(network: nn.Module, labels: Sequence[str], benchmark: BenchmarkSet, methods: Sequence[str], *,
                   gradcam_layer: str = "layer4", options: EvaluationOptions = EvaluationOptions(),
                   progress: Progress | None = None) -> dict[str, Any]:
    """The scorecard (JSON-ready dict) of ``methods`` for ``network`` on ``benchmark``'s faces.

    ``labels`` are the head's class ids in order; a face whose class the head does not know is left out.
    """
    from app.explain.engine import Explainer
    from app.explain.registry import METHODS, get_method

    methods = list(dict.fromkeys(methods))
    for method in methods:
        get_method(method)
    network = network.eval()
    faces = [f for f in benchmark.faces if f.label in labels]
    if not faces:
        raise ValueError("no benchmark face belongs to a class this model knows")
    targets = [list(labels).index(f.label) for f in faces]
    seed = options.seed
    sanity_methods = [m for m in (options.sanity_methods or methods) if m in methods]
    similarity_methods = [m for m in options.similarity_methods if m in methods]
    chosen = spread(faces, options.sanity_faces)
    do_sanity = bool(sanity_methods) and len(chosen) >= 2
    do_robust = options.robustness_samples > 0 and len(chosen) >= 2
    do_steps = "integrated_gradients" in methods and options.ig_tolerance > 0
    phases = Phases(phase_costs(methods, n_faces=len(faces), sanity_faces=len(chosen) if do_sanity else 0,
                                sanity_methods=sanity_methods, independent=options.independent,
                                random_logit=options.random_logit,
                                robustness_samples=options.robustness_samples if do_robust else 0,
                                similarity_methods=similarity_methods, step_rule=do_steps,
                                independent_methods=independent_methods(sanity_methods,
                                                                        options.independent_max_passes)), progress)
    explainer = Explainer(network, gradcam_layer=gradcam_layer)
    signed = {m for m in methods if METHODS[m].signed}

    passed = score_faces(network, explainer, faces, targets, methods, signed=signed, options=options,
                         keep=set(chosen), progress=phases.reporter("faces"))
    step_rule = ig_step_rule(explainer, network, faces[0], targets[0], options.ig_tolerance,
                             phases.fraction("step_rule", "IG step rule")) if do_steps else None

    from app.evaluate.similarity import similarity_localisation

    similarity = similarity_localisation(
        explainer, network, faces, similarity_methods, tolerance=options.tolerance_px, seed=seed,
        progress=phases.fraction("similarity", "similarity maps")) if similarity_methods else {}
    sanity_result = run_sanity_phase(network, explainer, gradcam_layer, faces, targets, chosen, sanity_methods,
                                     passed.kept, options, phases.fraction("sanity", "sanity checks")) \
        if do_sanity else {}
    robust = run_robustness_phase(explainer, faces, targets, chosen, methods, passed.kept, options,
                                  phases.fraction("robustness", "robustness")) if do_robust else {}
    phases.done()
    return {
        "format": FORMAT,
        "benchmark": {**benchmark.spec, "n_faces": len(faces), "skipped": benchmark.skipped},
        "options": options.to_dict(),
        "methods": methods,
        "signed_methods": [m for m in methods if m in signed],
        "chance": _chance(faces, options.tolerance_px, seed),
        "area_fraction": {k: _r(v) for k, v in ctx_metrics.context_shares(np.ones((112, 112))).areas.items()},
        "complexity_reference": {"flat": {"sparseness": 0.0, "complexity": _r(np.log(112 * 112))},
                                 "mask": {k: _interval(v, seed) for k, v in passed.mask_complexity.items()}},
        "scores": _summarise_methods(passed, methods, seed),
        "sanity": sanity_result,
        "robustness": robust,
        "context_occlusion": {k: _interval(v, seed) for k, v in passed.occlusion.items()},
        "ig_step_rule": _round_tree(step_rule),
        "similarity": similarity,
        "region_concordance": passed.regions.summary(),  # issue 23 (app/evaluate/concordance.py)
        "accuracy": {c: _r(np.mean(v)) for c, v in sorted(passed.correct.items())},
        "per_image": passed.per_image,
        # not results: how long it took (seconds per face and method, per phase; the caller adds the run's)
        "timings": {"seconds_per_face": {m: _r(np.mean(passed.methods[m].seconds)) for m in methods},
                    "phases": phases.seconds()},
    }
