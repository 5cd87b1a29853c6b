"""Explaining many faces at once: passes of several cases share batches (cohort jobs, research instruments).

Why: syndrome-wise maps, the evaluation scorecard and the imbalance experiment run the panel over hundreds of
faces. One :meth:`Explainer.explain` per face leaves batches part-empty (50 IG steps at batch 16 are 16+16+16+2
images) and pays per-call overhead per face; here the rows of *several faces* fill the same batches:

* integrated gradients: the (face, step) rows of all faces, ``batch_size`` rows per forward/backward;
* SmoothGrad: the (face, sample) rows, each face's noise drawn exactly as the single-face method draws it
  (:func:`app.explain.methods.smoothgrad.smoothgrad_noise`, same seed → same noise → same map);
* the gradient family (saliency, input × gradient, Grad-CAM): one forward/backward over all faces' inputs;
* occlusion (incremental, :mod:`app.explain.occlusion`): each face's windows run their early blocks on crops
  spliced into *that face's* cached clean activations (the part that differs per face), and the rest of the
  network, where most of the multiply-adds are, runs over windows of several faces in one batch of
  ``window_batch`` rows, so a face's last, part-full batch of windows is filled with the next face's.

Each row's objective is its own face's target logit (``logits[row, target[row]]``). The network is in eval mode,
so rows never influence each other, and every batched map equals the one-at-a-time map up to float rounding
(the tests check this). The remaining methods (DeepLIFT and the guided family, whose Captum hooks assume one
target per call, and the similarity decomposition) run per face on the same explainer, reusing its private
network copy and its folded inference copy. Only logit objectives are batched;
the engine's own :meth:`~app.explain.engine.Explainer.explain` serves similarity objectives.

``mode`` is the engine's (:mod:`app.explain.fast`): a fast request runs the fast variants as the engine does (IG,
SmoothGrad and occlusion as the explainer's measured plan chose them on this CPU, :mod:`app.explain.fast_plan`;
fast occlusion runs per face, coarse to fine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor

from app.explain.engine import Explainer, _check_target, check_request, prepare_input
from app.explain.fast import EXACT, FAST, check_mode, effective_mode, fast_context
from app.explain.fast_plan import FastPlan
from app.explain.methods.base import to_map, upsample
from app.explain.methods.occlusion import OCCLUDED_IMAGE_COST
from app.explain.methods.smoothgrad import smoothgrad_noise
from app.explain.occlusion import (
    InferenceForward,
    _IncrementalOcclusion,
    map_from_differences,
    occlusion_map,
    occlusion_windows,
)
from app.explain.registry import get_method

__all__ = ["BATCHED_METHODS", "CASES_PER_BATCH", "CohortItem", "explain_cohort"]

#: Methods whose passes are batched across faces; the others run per face.
BATCHED_METHODS: tuple[str, ...] = ("saliency", "input_x_gradient", "gradcam", "integrated_gradients", "smoothgrad",
                                    "occlusion")
#: Faces per :func:`explain_cohort` call in the cohort job and command: enough to fill the shared batches, few
#: enough that a crash loses little (each group's maps are stored as soon as it finishes) and memory stays small.
CASES_PER_BATCH = 8
#: Occluded images per batch of the shared tail (the engine's own occlusion batch is 64 windows of one face).
WINDOW_BATCH = 64
_GRADIENT_FAMILY = ("saliency", "input_x_gradient", "gradcam")


@dataclass(frozen=True)
class CohortItem:
    """One face of a cohort: its aligned uint8 (112, 112, 3) crop (or preprocessed tensor) and target class."""

    crop: np.ndarray | Tensor
    target: int


def _target_sum(logits: Tensor, targets: Tensor) -> Tensor:
    return logits.gather(1, targets.view(-1, 1)).sum()


def _rows_gradients(model: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor, batch_size: int,
                    sink: Callable[[slice, Tensor], None]) -> None:
    """d target logit / d input for every row, ``batch_size`` rows per forward/backward, handed to ``sink``."""
    for start in range(0, len(inputs), batch_size):
        rows = slice(start, min(len(inputs), start + batch_size))
        chunk = inputs[rows].detach().clone().requires_grad_(True)
        (grads,) = torch.autograd.grad(_target_sum(model(chunk), targets[rows]), chunk)
        sink(rows, grads)


def _integrated_gradients(model: Callable[[Tensor], Tensor], xs: Tensor, targets: Tensor, params: Mapping[str, Any],
                          batch_size: int, tick: Callable[[float], None]) -> Tensor:
    """(F, 3, H, W) IG attributions of F faces, (face, step) rows batched together."""
    steps = params["steps"]
    step_sizes_func, alphas_func = approximation_parameters(params["method"])
    step_sizes, alphas = step_sizes_func(steps), alphas_func(steps)
    base = torch.full_like(xs[:1], params["baseline"])
    faces = len(xs)
    # row r = face r // steps, step r % steps; built per batch so a large cohort never holds all rows at once
    face_of = torch.arange(faces * steps, device=xs.device) // steps
    step_of = torch.arange(faces * steps) % steps
    alpha = torch.tensor(alphas, dtype=xs.dtype, device=xs.device)
    weight = torch.tensor(step_sizes, dtype=xs.dtype, device=xs.device)
    totals = torch.zeros_like(xs)
    for start in range(0, faces * steps, batch_size):
        rows = slice(start, min(faces * steps, start + batch_size))
        face, step = face_of[rows], step_of[rows].to(xs.device)
        scaled = (base + alpha[step].view(-1, 1, 1, 1) * (xs[face] - base)).requires_grad_(True)
        (grads,) = torch.autograd.grad(_target_sum(model(scaled), targets[face]), scaled)
        totals.index_add_(0, face, grads * weight[step].view(-1, 1, 1, 1))
        tick(rows.stop - rows.start)
    return totals * (xs - base)


def _smoothgrad(model: Callable[[Tensor], Tensor], xs: Tensor, targets: Tensor, params: Mapping[str, Any],
                batch_size: int, tick: Callable[[float], None]) -> Tensor:
    """(F, 3, H, W) SmoothGrad of F faces, (face, sample) rows batched together, noise as the single method's."""
    samples = params["samples"]
    noisy = torch.cat([x + smoothgrad_noise(x, samples=samples, noise=params["noise"], seed=params["seed"])
                       for x in xs.split(1)])
    row_targets = targets.repeat_interleave(samples)
    totals = torch.zeros_like(xs)
    face_of = torch.arange(len(noisy), device=xs.device) // samples

    def sink(rows: slice, grads: Tensor) -> None:
        totals.index_add_(0, face_of[rows], grads.abs())
        tick(rows.stop - rows.start)

    _rows_gradients(model, noisy, row_targets, batch_size, sink)
    return totals * 1 / samples


def _gradient_family(explainer: Explainer, xs: Tensor, targets: Tensor, batch_size: int,
                     tick: Callable[[float], None]) -> dict[str, Tensor]:
    """Saliency, input × gradient and signed Grad-CAM of F faces from batched forward/backward passes."""
    grads, cams = [], []
    for start in range(0, len(xs), batch_size):
        captured: list[Tensor] = []
        handle = explainer._layer.register_forward_hook(
            lambda _m, _i, output, captured=captured: captured.append(output))
        try:
            chunk = xs[start:start + batch_size].detach().clone().requires_grad_(True)
            logits = explainer._model(chunk)
        finally:
            handle.remove()
        (activation,) = captured
        grad_x, grad_a = torch.autograd.grad(_target_sum(logits, targets[start:start + batch_size]),
                                             (chunk, activation))
        weights = grad_a.mean(dim=tuple(range(2, grad_a.dim())), keepdim=True)
        cams.append((weights * activation).sum(dim=1, keepdim=True).detach())
        grads.append(grad_x.detach())
        tick(len(chunk))
    grad, cam = torch.cat(grads), torch.cat(cams)
    return {
        "saliency": grad.abs().amax(dim=1),
        "input_x_gradient": (xs * grad).sum(dim=1),
        "gradcam": upsample(cam, tuple(xs.shape[2:]))[:, 0],
    }


def _occlusion(forward: InferenceForward, xs: Tensor, targets: Sequence[int], params: Mapping[str, Any],
               window_batch: int, tick: Callable[[float], None]) -> list[np.ndarray]:
    """Occlusion maps of F faces: per-face fronts (crops on that face's clean activations), shared tail batches.

    Faces are taken one after another, so only one face's cached clean activations are alive at a time (plus the
    queued fronts, at most ``window_batch`` rows of one feature map).
    """
    height, width = int(xs.shape[2]), int(xs.shape[3])
    windows = occlusion_windows(height, width, params["window"], params["stride"])
    diffs = [np.empty(len(windows), dtype=np.float32) for _ in range(len(xs))]
    pending: list[tuple[int, slice, Tensor]] = []  # (face, window rows, front feature maps)
    references: list[float] = []  # each face's clean target logit
    queued, first_block = 0, 0

    def flush() -> None:
        nonlocal queued
        if not pending:
            return
        logits = forward.tail(torch.cat([front for _, _, front in pending]), first_block)
        at = 0
        for face, rows, front in pending:
            count = len(front)
            diffs[face][rows] = (references[face] - logits[at:at + count, targets[face]].float()).cpu().numpy()
            at += count
        tick(OCCLUDED_IMAGE_COST * queued)
        pending.clear()
        queued = 0

    with torch.inference_mode():
        for face in range(len(xs)):
            engine = _IncrementalOcclusion(forward, xs[face:face + 1].detach(), windows, params["baseline"])
            first_block = engine.blocks_on_crops  # the same for every face: it depends on the geometry only
            references.append(float(engine.clean_logits[0, targets[face]]))
            begin = 0
            while begin < len(windows):  # fill the shared batch exactly: a face's last windows share it with the next's
                take = min(window_batch - queued, len(windows) - begin)
                rows = slice(begin, begin + take)
                pending.append((face, rows, engine.front(rows)))
                queued, begin = queued + take, begin + take
                if queued == window_batch:
                    flush()
            del engine
        flush()
    return [map_from_differences(windows, d, height, width) for d in diffs]


def _fast_params(plan: FastPlan, method_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the work the plan chose (IG steps, SmoothGrad samples), as the engine's methods run them."""
    changed = dict(params)
    if method_id == "integrated_gradients":
        changed["steps"] = plan.ig_steps(params["steps"], params["method"])
    elif method_id == "smoothgrad":
        changed["samples"] = plan.sg_samples(params["samples"])
    return changed


def _fast_occlusion(explainer: Explainer, xs: Tensor, targets: Sequence[int], params: Mapping[str, Any],
                    window_batch: int, tick: Callable[[float], None]) -> list[np.ndarray]:
    """Fast occlusion per face, exactly as the engine's method computes it (the plan's network, coarse to fine):
    the windows a face evaluates depend on its own coarse pass, so faces do not share tail batches here."""
    plan = explainer.fast_plan()
    forward = explainer.fast_networks().occlusion_forward(plan.choice("occlusion").precision)
    refine = plan.occlusion_refine(params["window"], params["stride"])
    windows = len(occlusion_windows(int(xs.shape[2]), int(xs.shape[3]), params["window"], params["stride"]))
    maps = []
    for face in range(len(xs)):
        done = [0.0]

        def report(fraction: float, done: list[float] = done) -> None:
            tick(OCCLUDED_IMAGE_COST * windows * (fraction - done[0]))
            done[0] = fraction

        maps.append(occlusion_map(forward, xs[face:face + 1], target=targets[face], window=params["window"],
                                  stride=params["stride"], baseline=params["baseline"], batch_size=window_batch,
                                  on_progress=report, refine=refine))
    return maps


def _cost(methods: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> float:
    """One face's cost of ``methods`` in forward+backward units, shared passes counted once (as the engine)."""
    passes: dict[str, float] = {}
    for method_id in methods:
        passes.update(get_method(method_id).passes(params[method_id]))
    return sum(passes.values())


def _progress(methods: Sequence[str], params: Mapping[str, Mapping[str, Any]], faces: int,
              on_progress: Callable[[float], None] | None) -> Callable[[float], None]:
    """A ``tick(units)`` that reports the overall fraction done to ``on_progress`` (never above 1)."""
    total = max(1e-9, _cost(methods, params) * faces)
    done = [0.0]

    def tick(units: float) -> None:
        done[0] += units
        if on_progress is not None:
            on_progress(min(1.0, done[0] / total))

    return tick


def explain_cohort(
    explainer: Explainer,
    items: Sequence[CohortItem],
    *,
    methods: Sequence[str],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    mode: str = EXACT,
    batch_size: int | None = None,
    window_batch: int = WINDOW_BATCH,
    on_face: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Maps of ``methods`` for every face of ``items`` (logit objectives), in item order, keys in method order.

    The same maps as ``[explainer.explain(i.crop, target=i.target, methods=methods, params=params, mode=mode)
    for i in items]`` up to float rounding, with the passes of :data:`BATCHED_METHODS` batched across faces
    (``batch_size`` rows per forward/backward, default the explainer's; ``window_batch`` occluded images per batch
    of occlusion's shared tail). ``on_face(index, maps)`` is called as
    each face's per-face methods finish (after the batched passes); ``on_progress`` gets the overall fraction
    after every batch (weighted by the passes' costs; a job's heartbeat). Raises ValueError like ``explain``.
    """
    check_mode(mode)
    requested, normalised = check_request(methods, params)
    batch_size = explainer._batch_size if batch_size is None else int(batch_size)
    if batch_size < 1 or window_batch < 1:
        raise ValueError(f"batch_size and window_batch must be at least 1, got {batch_size} and {window_batch}")
    targets_list = [_check_target(item.target, explainer.num_classes) for item in items]
    results: list[dict[str, np.ndarray]] = [{} for _ in items]
    if not items:
        return []
    batched = [m for m in requested if m in BATCHED_METHODS]
    rest = [m for m in requested if m not in BATCHED_METHODS]
    tick = _progress(requested, normalised, len(items), on_progress)
    if batched:
        with explainer._lock, torch.inference_mode(False), torch.enable_grad():
            xs = torch.cat([prepare_input(item.crop, explainer.device) for item in items])
            targets = torch.tensor(targets_list, dtype=torch.long, device=explainer.device)
            family = [m for m in batched if m in _GRADIENT_FAMILY]
            if family:
                with fast_context(family[0], mode, explainer.device):
                    maps = _gradient_family(explainer, xs, targets, batch_size, tick)
                for method_id in family:
                    for i in range(len(items)):
                        results[i][method_id] = to_map(maps[method_id][i])
            for method_id, run in (("integrated_gradients", _integrated_gradients), ("smoothgrad", _smoothgrad)):
                if method_id in batched:
                    model, method_params = explainer._model, normalised[method_id]
                    if effective_mode(method_id, mode) == FAST:  # as the engine's methods: the plan's variant
                        plan = explainer.fast_plan()
                        model = explainer.fast_networks().gradient_model(plan.choice(method_id).precision)
                        method_params = _fast_params(plan, method_id, method_params)
                    with fast_context(method_id, mode, explainer.device):
                        attribution = run(model, xs, targets, method_params, batch_size, tick)
                    reduced = attribution.sum(dim=1) if method_id == "integrated_gradients" else attribution.amax(dim=1)
                    for i in range(len(items)):
                        results[i][method_id] = to_map(reduced[i])
            if "occlusion" in batched:
                forward = explainer._inference_forward()
                if not isinstance(forward, InferenceForward):  # the engine folds every IResNet it explains
                    raise RuntimeError("cohort occlusion needs the engine's folded inference copy")
                if effective_mode("occlusion", mode) == FAST:  # as the engine's occlusion method: the plan's variant
                    maps = _fast_occlusion(explainer, xs, targets_list, normalised["occlusion"], window_batch, tick)
                else:
                    maps = _occlusion(forward, xs, targets_list, normalised["occlusion"], window_batch, tick)
                for i, values in enumerate(maps):
                    results[i]["occlusion"] = values
    for i, item in enumerate(items):
        if rest:
            results[i].update(explainer.explain(item.crop, target=targets_list[i], methods=rest,
                                                params={m: normalised[m] for m in rest}, mode=mode))
            tick(_cost(rest, normalised))
        if on_face is not None:
            on_face(i, {m: results[i][m] for m in requested})
    if on_progress is not None:  # fast mode does less work than the (exact) cost model counts: end at 1
        on_progress(1.0)
    return [{m: result[m] for m in requested} for result in results]
