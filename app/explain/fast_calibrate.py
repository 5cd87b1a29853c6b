"""Fast mode's measurement: each candidate variant timed and compared with exact on probe faces (see
:mod:`app.explain.fast_plan` for what is chosen and why; this module only measures and chooses).

Kept apart from the plan's types and cache because it is most of the code and needs the methods and the occlusion
engine, which the plan's readers (the engine, cohort batches) do not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from app.explain.fast_plan import (
    BFLOAT16,
    CALIBRATION_BAR,
    FLOAT32,
    FOLDED,
    IG_LADDER,
    IG_STEPS,
    OCC_STRIDE,
    OCC_WINDOW,
    REFINE_LADDER,
    SG_LADDER,
    SG_SAMPLES,
    Choice,
    FastNetworks,
    FastPlan,
    machine_name,
)

#: (seed, class, index) of the synthetic probe faces (not the bench's or the tests' faces)
PROBES: tuple[tuple[int, str, int], ...] = ((7, "syn_b", 3), (11, "syn_a", 5))


def probe_faces() -> list[Tensor]:
    """Preprocessed (1, 3, 112, 112) synthetic faces through the real detection and alignment, or image-like smooth
    crops where the vision stack is unavailable. Two faces: a candidate must hold the bar on both, since one face
    alone flatters some candidates (IG at 8 steps: 0.996 on one demo face, 0.992 on another)."""
    from app.nets.preprocess import preprocess

    faces = []
    for seed, class_id, index in PROBES:
        try:
            from app.synth.generate import generate_one
            from app.vision.pipeline import process_photo

            crop = process_photo(generate_one(seed, class_id, index).jpeg).aligned.crop
        except Exception:  # any failure of the optional vision stack falls back to a smooth image
            rng = np.random.default_rng(seed)
            coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 14, 14)).astype(np.float32))
            image = torch.nn.functional.interpolate(coarse, size=(112, 112), mode="bicubic", align_corners=False)
            crop = np.clip(np.round(image[0].permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)
        faces.append(preprocess(crop))
    return faces


def _corr(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, np.float64).ravel()
    b = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, run: Callable[[], Any]) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    result = run()
    _sync(device)
    return time.perf_counter() - start, result


def calibrate(networks: FastNetworks, key: str, *, probe: Callable[[], list[Tensor]] | None = None,
              log: Callable[[str], None] | None = None) -> FastPlan:
    """Measure every candidate on the probe faces and choose, per fast method, the fastest that holds the bar on all."""
    from app.explain.coarse_to_fine import coarse_to_fine
    from app.explain.methods.base import Context
    from app.explain.methods.integrated_gradients import integrated_gradients
    from app.explain.methods.smoothgrad import smoothgrad
    from app.explain.occlusion import (
        _IncrementalOcclusion,
        _positions,
        linear_tail_estimates,
        map_from_differences,
        occlusion_windows,
    )

    say = log or (lambda _message: None)
    started = time.perf_counter()
    device = networks.device
    faces = [face.to(device) for face in (probe or probe_faces)()]
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            targets = [int(networks.module(face).argmax()) for face in faces]
        x, target = faces[0], targets[0]  # per-unit timings on the first face
        candidates: list[dict[str, Any]] = []
        notes: list[str] = []
        units: dict[str, float] = {}

        # --- per-unit costs, side by side (best of interleaved repeats) ---------------------------------------
        rows = min(8, networks.batch_size)
        xb = x.expand(rows, -1, -1, -1).clone()

        def fb(precision: str) -> Callable[[], None]:
            model = networks.gradient_model(precision)

            def run() -> None:
                xg = xb.clone().requires_grad_(True)
                torch.autograd.grad(model(xg)[:, target].sum(), xg)
            return run

        windows = occlusion_windows(x.shape[2], x.shape[3], OCC_WINDOW, OCC_STRIDE)
        middle = slice(len(windows) // 2 - 16, len(windows) // 2 + 16)

        def occ(precision: str, part: str = "logits") -> Callable[[], None]:
            engine = _IncrementalOcclusion(networks.occlusion_forward(precision), x.detach(), windows, -1.0)
            return lambda: getattr(engine, part)(middle)

        # bf16 screening: one no-grad forward of two images, folded float32 against the twin (where the twin is no
        # faster, as on a CPU that emulates bf16, it is ruled out at the cost of a forward pass, not of a calibration)
        screen_x = x.expand(2, -1, -1, -1).clone()
        precisions = [FLOAT32, FOLDED]
        with torch.no_grad():
            twin = networks.twin()
            for net in (networks.folded, twin):
                net(screen_x)
            folded_s = min(_timed(device, lambda: networks.folded(screen_x))[0] for _ in range(2))
            twin_s = min(_timed(device, lambda: twin(screen_x))[0] for _ in range(2))
        units["forward2:float32-folded"], units["forward2:bfloat16"] = folded_s, twin_s
        if twin_s < folded_s:
            precisions.append(BFLOAT16)
            say(f"bf16 screening: twin forward {twin_s * 1e3:.1f} ms vs float32 {folded_s * 1e3:.1f} ms: measured")
        else:
            # The measurement is the reason, not the CPU's flags: a CPU with native bf16 (AVX512-BF16) can still
            # see no gain on a network too small for the bf16 kernels to pay (the demo model on an AMD EPYC Zen 4).
            notes.append(f"bfloat16 ruled out: the bf16 twin's forward of two images took {twin_s / folded_s:.2f}x "
                         "float32's for this network on this CPU (no faster)")
            say(notes[-1])
        runs = {p: fb(p) for p in precisions}
        for run in runs.values():
            run()
        best = {p: math.inf for p in precisions}
        for _ in range(2):
            for p, run in runs.items():
                best[p] = min(best[p], _timed(device, run)[0] / rows)
        units.update({f"fb:{p}": s for p, s in best.items()})
        occ_precisions = [FOLDED, *([BFLOAT16] if BFLOAT16 in precisions else [])]
        occ_runs = {p: occ(p) for p in occ_precisions}
        occ_runs.update({f"front:{p}": occ(p, "front") for p in occ_precisions})
        with torch.inference_mode():
            for run in occ_runs.values():
                run()
            occ_best = {p: math.inf for p in occ_runs}
            for _ in range(2):
                for p, run in occ_runs.items():
                    occ_best[p] = min(occ_best[p], _timed(device, run)[0] / 32)
        units.update({f"occ:{p}": s for p, s in occ_best.items()})  # "occ:front:<p>": the cropped part alone
        float32s = [FLOAT32, FOLDED]
        cheap32 = min(float32s, key=lambda p: best[p])

        def context(precision: str, face: int) -> Context:
            return Context(model=networks.gradient_model(precision), layer=torch.nn.Identity(), x=faces[face],
                           target=targets[face], batch_size=networks.batch_size, inference=lambda: networks.folded,
                           costs={})

        def on_faces(precision: str, work: int, compute: Callable[[Context, int], Tensor]) -> tuple[float, list]:
            """(seconds per face, maps) of one candidate on every probe face."""
            seconds, maps = _timed(device, lambda: [compute(context(precision, i), work) for i in range(len(faces))])
            return seconds / len(faces), maps

        choices: dict[str, Choice] = {}

        # --- integrated gradients and SmoothGrad: fewest steps / samples per precision -------------------------
        def ladder(method: str, ladder_: tuple[int, ...], full: int,
                   compute: Callable[[Context, int], Tensor]) -> None:
            exact_s, exact_maps = on_faces(FLOAT32, full, compute)
            best_choice: Choice | None = None
            for precision in [p for p in (FOLDED, BFLOAT16) if p in precisions]:
                for work in (*ladder_, full):
                    estimate = work * best[precision]
                    if best_choice is not None and estimate >= best_choice.seconds:
                        break  # more work on this precision cannot win
                    if precision == FOLDED and work == full:
                        agreement = 1.0  # exact's arithmetic up to rounding (no need to measure)
                        seconds = estimate
                    else:
                        seconds, maps = on_faces(precision, work, compute)
                        agreement = min(_corr(a, b) for a, b in zip(maps, exact_maps, strict=True))
                    kept = agreement >= CALIBRATION_BAR
                    candidates.append({"method": method, "precision": precision, "work": work,
                                       "seconds": round(seconds, 4), "estimate": round(estimate, 4),
                                       "agreement": round(agreement, 6), "kept": kept})
                    say(f"{method}: {precision} x {work}: corr {agreement:.5f}, est. {estimate:.3f} s")
                    if kept:
                        if best_choice is None or estimate < best_choice.seconds:
                            best_choice = Choice(method, precision, float(work), estimate, exact_s, agreement,
                                                 "")
                        break
            if best_choice is None or best_choice.seconds >= full * best[cheap32]:
                best_choice = Choice(method, cheap32, float(full), full * best[cheap32], exact_s, 1.0, "")
            why = (f"fastest candidate with corr >= {CALIBRATION_BAR} on both probe faces: "
                   f"{best_choice.seconds / (full * best[FLOAT32]):.0%} of exact's estimated work time "
                   f"({best_choice.work:g} of {full} passes at {best_choice.precision}, "
                   f"{best_choice.seconds / best_choice.work * 1e3:.1f} ms per image vs float32 "
                   f"{best[FLOAT32] * 1e3:.1f} ms)")
            choices[method] = Choice(method, best_choice.precision, best_choice.work, best_choice.seconds,
                                     exact_s, best_choice.agreement, why)

        ladder("integrated_gradients", IG_LADDER, IG_STEPS, lambda ctx, steps: integrated_gradients(
            ctx, steps=steps, method="gausslegendre", baseline=-1.0).sum(dim=1))
        ladder("smoothgrad", SG_LADDER, SG_SAMPLES, lambda ctx, samples: smoothgrad(
            ctx, samples=samples, noise=0.15, seed=0).amax(dim=1))

        # --- occlusion: coarse to fine, simulated on each precision's window differences ------------------------
        height, width = int(x.shape[2]), int(x.shape[3])
        grid = (len(_positions(height, OCC_WINDOW, OCC_STRIDE)), len(_positions(width, OCC_WINDOW, OCC_STRIDE)))

        def all_differences(precision: str) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
            """(seconds per face, every window's difference on each probe face, their linearised-tail estimates) on
            one precision's network."""
            estimates: list[np.ndarray] = []

            def run() -> list[np.ndarray]:
                per_face = []
                for face, face_target in zip(faces, targets, strict=True):
                    engine = _IncrementalOcclusion(networks.occlusion_forward(precision), face.detach(), windows, -1.0)
                    reference = float(engine.clean_logits[0, face_target])
                    out = np.empty(len(windows), dtype=np.float32)
                    for begin in range(0, len(windows), 64):
                        chunk = slice(begin, min(len(windows), begin + 64))
                        out[chunk] = (reference - engine.logits(chunk)[:, face_target].float()).cpu().numpy()
                    per_face.append(out)
                return per_face
            with torch.inference_mode():
                seconds, per_face = _timed(device, run)
            for face, face_target in zip(faces, targets, strict=True):
                engine = _IncrementalOcclusion(networks.occlusion_forward(precision), face.detach(), windows, -1.0)
                estimates.append(linear_tail_estimates(engine, face_target))
            return seconds / len(faces), per_face, estimates

        def simulated(diffs: np.ndarray, estimates: np.ndarray, work: float) -> tuple[np.ndarray, int]:
            """The coarse-to-fine map from known differences (the windows it picks depend only on them), and the
            count of windows it evaluated."""
            evaluated = [0]

            def lookup(indices: np.ndarray, _report: Callable[[int], None]) -> np.ndarray:
                evaluated[0] += len(indices)
                return diffs[indices]

            values = coarse_to_fine(grid, lookup, refine=work, base=estimates if work < 1.0 else None)
            return map_from_differences(windows, values, height, width), evaluated[0]

        exact_s, exact_diffs, exact_estimates = all_differences(FOLDED)
        exact_maps = [map_from_differences(windows, d, height, width) for d in exact_diffs]
        occ_choice = Choice("occlusion", FOLDED, 1.0, len(windows) * occ_best[FOLDED], exact_s, 1.0, "")
        for precision in occ_precisions:
            diffs, estimates = (exact_diffs, exact_estimates) if precision == FOLDED else \
                all_differences(precision)[1:]
            for work in (*REFINE_LADDER, 1.0):
                results = [simulated(d, e, work) for d, e in zip(diffs, estimates, strict=True)]
                agreement = 1.0 if (precision == FOLDED and work >= 1.0) else \
                    min(_corr(m, e) for (m, _), e in zip(results, exact_maps, strict=True))
                count = max(n for _, n in results)
                # estimates: every window's cropped front (the linearised tail), then the tails of those evaluated
                front = occ_best[f"front:{precision}"] if work < 1.0 else 0.0
                estimate = len(windows) * front + count * max(0.0, occ_best[precision] - front)
                kept = agreement >= CALIBRATION_BAR
                candidates.append({"method": "occlusion", "precision": precision, "work": work,
                                   "windows": count, "estimate": round(estimate, 4),
                                   "agreement": round(agreement, 6), "kept": kept})
                say(f"occlusion: {precision} refine {work}: {count} windows, corr {agreement:.5f}")
                if kept:
                    if estimate < occ_choice.seconds:
                        occ_choice = Choice("occlusion", precision, float(work), estimate, exact_s, agreement, "")
                    break
        full_s = len(windows) * occ_best[FOLDED]
        choices["occlusion"] = Choice(
            "occlusion", occ_choice.precision, occ_choice.work, occ_choice.seconds, exact_s, occ_choice.agreement,
            f"fastest candidate with corr >= {CALIBRATION_BAR} on both probe faces: {occ_choice.seconds / full_s:.0%} "
            f"of exact's estimated time ({occ_choice.describe()}, "
            f"{occ_best[occ_choice.precision] * 1e3:.2f} ms per window vs float32 {occ_best[FOLDED] * 1e3:.2f} ms)")

    return FastPlan(key=key, cpu=machine_name(device), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    calibration_seconds=round(time.perf_counter() - started, 2), choices=choices,
                    candidates=tuple(candidates), unit_seconds={k: round(v, 6) for k, v in units.items()},
                    notes=tuple(notes))
