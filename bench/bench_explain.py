"""Explanation panel: naive Captum, one method at a time, against this project's engine, on this CPU.

    python bench/bench_explain.py [--models demo,iresnet50,iresnet100] [--repeat N] [--methods a,b,...]
                                  [--threads N] [--krypton 0.9,0.6] [--cohort-cases demo:6,iresnet50:2]
                                  [--no-detail] [--no-compile]

Per model and method: the time of stock Captum with its defaults on a logits-only wrapper of the network
(``Saliency``, ``InputXGradient``, ``IntegratedGradients`` with 50 steps in one batch, ``NoiseTunnel(Saliency)``
with the engine's samples / noise / seed, ``DeepLift``, ``GuidedBackprop``, ``Deconvolution``, ``LayerGradCam`` at
layer4, ``GuidedGradCam``, ``Occlusion`` with ``perturbations_per_eval=1``; baselines and windows as the
engine's defaults, so the maps are comparable), the engine's time for that method alone
(``Explainer.explain(..., methods=[m])``), their ratio, and the Pearson correlation of the two maps after the
engine's per-channel reduction is applied to Captum's raw output. The panel row is the whole default panel:
naive = the sum of the methods run one by one, exact / fast = one ``explain`` call (passes shared).

Modes (:mod:`app.explain.fast`): ``exact`` is the engine's default; ``fast`` runs the methods offered in fast
mode with their approximation (``= exact`` where a method has none) and ``corr fast~ex`` is the agreement of
the fast map with the exact one (``!`` below the 0.99 bar). Which approximation each fast method runs is chosen per
CPU and network from a measurement (:mod:`app.explain.fast_plan`): the bench prints the plan first (every candidate
with its estimated time and its agreement on the probe faces, the choice and why, and the CPU features that decide
the precision), then, after the per-method table, each fast method's variant, its agreement on the bench's own face
(not one of the probe faces) and its time against exact's (fast mode must never be slower). ``--krypton`` measures
Krypton-style capped occlusion as a candidate, and the cohort table (bench/cohort_throughput.py) cases per minute
one at a time against batched across cases, each in a fresh process so its peak memory is its own.

Stock Captum is *wrong* on PReLU networks for guided backprop, deconvolution (both silently become the plain
gradient) and DeepLIFT (PReLU treated as linear); the engine applies the PReLU rule on purpose, so its maps
differ from stock Captum there. For those methods ``corr rules`` compares with Captum's classes extended by
:mod:`app.explain.rules` (same maps expected); elsewhere it is blank.

``bound``: the time the method's passes take at the best measured batch size, for methods that cannot get
faster than their passes (1 forward+backward for gradients, 2 images for DeepLIFT, steps / samples for IG and
SmoothGrad, one full forward per occlusion window). The incremental occlusion beats its "bound", because it
does not run full forward passes.

Times are the best of ``--repeat`` runs after a warm-up pass (other processes on the same cores only ever add
time; the load average is printed so a reader can tell a contaminated run). The ``CPU s`` columns are this
process's CPU time for the same runs: on loaded shared cores the steadier measure, since waiting for a core
adds wall time but not CPU time (run with ``--threads 1`` there: spinning OpenMP threads burn CPU waiting).
``roofline``: the floating-point operations of each exact map (torch's FlopCounterMode), the rate the engine
reaches, and that rate against the float32 peak of this CPU's convolution kernels (measured on the network's own
layer3 convolution); exact mode does naive Captum's arithmetic, so naive / (FLOPs / peak) is the best ratio any
exact implementation can reach on this CPU. ``candidate: torch.compile`` compiles the engine's forward+backward
with Inductor and compares speed and gradients with eager mode.

The iResNet-50 has random weights (``randomise_`` with convolutions x2, so activations stay finite and the logits
respond to the input).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum.attr import (
    Deconvolution,
    DeepLift,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from app.explain.occlusion import _IncrementalOcclusion, inference_forward, occlusion_map, occlusion_windows
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess
from bench.explain_networks import load_network

METHOD_IDS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift",
              "guided_backprop", "deconvolution", "gradcam", "guided_gradcam", "occlusion")
# the engine's defaults (app.explain.methods), repeated here so the naive side does not depend on the engine
IG_STEPS, BASELINE = 50, -1.0
SG_SAMPLES, SG_NOISE, SG_SEED, INPUT_RANGE = 25, 0.15, 0, 2.0
OCC_WINDOW, OCC_STRIDE = 10, 5


class LogitsOnly(nn.Module):
    def __init__(self, network: IResNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[0]


# --- models and input ---------------------------------------------------------------------------------

def face_crop() -> np.ndarray:
    """An aligned 112x112 crop of a synthetic face, through the real detection/alignment pipeline."""
    from app.synth.generate import generate_one
    from app.vision.pipeline import process_photo

    return process_photo(generate_one(0, "syn_a", 0).jpeg).aligned.crop


# --- the naive side: stock Captum, one method at a time, then the engine's reduction --------------------

def _grad_input(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _sum_rgb(a: torch.Tensor) -> np.ndarray:
    return a.detach().sum(dim=1)[0].numpy().astype(np.float32)


def _max_rgb(a: torch.Tensor) -> np.ndarray:
    return a.detach().amax(dim=1)[0].numpy().astype(np.float32)


def _gradcam(model: LogitsOnly, x: torch.Tensor, target: int) -> np.ndarray:
    cam = LayerGradCam(model, model.network.layer4).attribute(_grad_input(x), target=target, relu_attributions=False)
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")[0, 0].detach().numpy()


def _smoothgrad(model: LogitsOnly, x: torch.Tensor, target: int) -> np.ndarray:
    torch.manual_seed(SG_SEED)
    a = NoiseTunnel(Saliency(model)).attribute(_grad_input(x), nt_type="smoothgrad", nt_samples=SG_SAMPLES,
                                               stdevs=SG_NOISE * INPUT_RANGE, target=target)
    return _max_rgb(a)


NAIVE: dict[str, Callable[[LogitsOnly, torch.Tensor, int], np.ndarray]] = {
    "saliency": lambda m, x, t: _max_rgb(Saliency(m).attribute(_grad_input(x), target=t)),
    "input_x_gradient": lambda m, x, t: _sum_rgb(InputXGradient(m).attribute(_grad_input(x), target=t)),
    "integrated_gradients": lambda m, x, t: _sum_rgb(IntegratedGradients(m).attribute(
        _grad_input(x), baselines=BASELINE, target=t, n_steps=IG_STEPS)),
    "smoothgrad": _smoothgrad,
    "deeplift": lambda m, x, t: _sum_rgb(DeepLift(m).attribute(
        _grad_input(x), baselines=torch.full_like(x, BASELINE), target=t)),
    "guided_backprop": lambda m, x, t: _sum_rgb(GuidedBackprop(m).attribute(_grad_input(x), target=t)),
    "deconvolution": lambda m, x, t: _sum_rgb(Deconvolution(m).attribute(_grad_input(x), target=t)),
    "gradcam": _gradcam,
    "guided_gradcam": lambda m, x, t: _sum_rgb(GuidedGradCam(m, m.network.layer4).attribute(
        _grad_input(x), target=t, interpolate_mode="bilinear")),
    "occlusion": lambda m, x, t: Occlusion(m).attribute(
        x, sliding_window_shapes=(3, OCC_WINDOW, OCC_WINDOW), strides=(3, OCC_STRIDE, OCC_STRIDE),
        baselines=BASELINE, target=t, perturbations_per_eval=1)[0, 0].numpy(),
}


def rule_references() -> dict[str, Callable[[LogitsOnly, torch.Tensor, int], np.ndarray]]:
    """Captum's classes with the PReLU rule of app.explain.rules (absent until that module exists)."""
    try:
        from app.explain.rules import PReLUDeconvolution, PReLUDeepLift, PReLUGuidedBackprop, PReLUGuidedGradCam
    except ImportError:
        return {}
    return {
        "deeplift": lambda m, x, t: _sum_rgb(PReLUDeepLift(m).attribute(
            _grad_input(x), baselines=torch.full_like(x, BASELINE), target=t)),
        "guided_backprop": lambda m, x, t: _sum_rgb(PReLUGuidedBackprop(m).attribute(_grad_input(x), target=t)),
        "deconvolution": lambda m, x, t: _sum_rgb(PReLUDeconvolution(m).attribute(_grad_input(x), target=t)),
        "guided_gradcam": lambda m, x, t: _sum_rgb(PReLUGuidedGradCam(m, m.network.layer4).attribute(
            _grad_input(x), target=t, interpolate_mode="bilinear")),
    }


# --- measuring ---------------------------------------------------------------------------------------

def best_of(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def best_of_both(run: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best wall seconds, best CPU seconds of this process, result): on loaded shared cores CPU time is the
    steadier measure of the work done (other processes add wall time, much less CPU time)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return min(walls), min(cpus), result


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pass_times(model: LogitsOnly, x: torch.Tensor, target: int, repeat: int) -> dict[str, float]:
    """Seconds per image: forward+backward at batch 1, 2 and 16; no-grad forward (inference copy) at batch 64."""
    out: dict[str, float] = {}
    for batch in (1, 2, 16):
        xb = x.expand(batch, -1, -1, -1).clone()

        def fb(xb: torch.Tensor = xb) -> None:
            xg = xb.clone().requires_grad_(True)
            torch.autograd.grad(model(xg)[:, target].sum(), xg)

        fb()
        out[f"fb{batch}"] = best_of(fb, repeat)[0] / batch
    forward = inference_forward(model.network)
    xb = x.expand(64, -1, -1, -1).clone()
    forward(xb)
    out["f64"] = best_of(lambda: forward(xb), repeat)[0] / 64
    return out


def bounds(t: dict[str, float], windows: int) -> dict[str, float]:
    """Seconds each method's passes take at the best measured batch size."""
    one = t["fb1"]
    return {
        "saliency": one, "input_x_gradient": one, "gradcam": one, "guided_backprop": one, "deconvolution": one,
        "guided_gradcam": 2 * one, "deeplift": 2 * t["fb2"],
        "integrated_gradients": IG_STEPS * t["fb16"], "smoothgrad": SG_SAMPLES * t["fb16"],
        "occlusion": windows * t["f64"],
    }


def panel_bound(per: dict[str, float], methods: list[str], t: dict[str, float]) -> float:
    """Shared passes counted once: one gradient pass (saliency, input x gradient, Grad-CAM), one guided pass."""
    passes: dict[str, float] = {}
    if {"saliency", "input_x_gradient", "gradcam", "guided_gradcam"} & set(methods):
        passes["gradient"] = t["fb1"]
    if {"guided_backprop", "guided_gradcam"} & set(methods):
        passes["guided"] = t["fb1"]
    for method in ("integrated_gradients", "smoothgrad", "deeplift", "deconvolution", "occlusion"):
        if method in methods:
            passes[method] = per[method]
    return sum(passes.values())


def occlusion_detail(network: IResNet, x: torch.Tensor, repeat: int) -> None:
    """Per-window cost of each way of evaluating occluded images, on 64 windows from the middle rows."""
    windows = occlusion_windows(112, 112, OCC_WINDOW, OCC_STRIDE)
    rows = slice(len(windows) // 2 - 32, len(windows) // 2 + 32)
    picked = windows[rows]
    batch = x.expand(len(picked), -1, -1, -1).clone()
    for i, (y0, y1, x0, x1) in enumerate(picked):
        batch[i, :, y0:y1, x0:x1] = BASELINE
    module = LogitsOnly(network)
    channels_last = LogitsOnly(copy.deepcopy(network).to(memory_format=torch.channels_last))
    forward = inference_forward(network)
    engine = _IncrementalOcclusion(forward, x, windows, BASELINE)

    def module_one_by_one() -> None:
        with torch.no_grad():
            for i in range(16):
                module(batch[i:i + 1])

    def batched(fn: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor, size: int) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for b in range(0, len(picked), size):
                    fn(tensor[b:b + size])
        return run

    batch_cl = batch.contiguous(memory_format=torch.channels_last)
    cases: list[tuple[str, Callable[[], None], int]] = [
        ("Captum-style: module, batch 1, NCHW (16 windows)", module_one_by_one, 16),
        ("module, batch 64, NCHW", batched(module, batch, 64), 64),
        ("module, batch 16, channels-last", batched(channels_last, batch_cl, 16), 64),
        ("module, batch 64, channels-last", batched(channels_last, batch_cl, 64), 64),
        ("inference_forward (folded, channels-last), batch 16", batched(forward, batch, 16), 64),
        ("inference_forward (folded, channels-last), batch 64", batched(forward, batch, 64), 64),
        (f"incremental ({engine.blocks_on_crops} blocks on crops), batch 16",
         lambda: [engine.logits(slice(rows.start + b, rows.start + b + 16)) for b in range(0, 64, 16)], 64),
        (f"incremental ({engine.blocks_on_crops} blocks on crops), batch 64", lambda: engine.logits(rows), 64),
    ]
    print("  occlusion, ms per window (64 windows from the middle rows; best of runs):")
    for label, run, count in cases:
        run()
        seconds = best_of(run, repeat)[0]
        print(f"    {label:<58} {seconds * 1000 / count:8.2f}", flush=True)
    with torch.no_grad():
        reference = network(batch)[0]
    incremental = engine.logits(rows)
    print(f"    max |incremental - module| logit difference on these windows: "
          f"{float((incremental - reference).abs().max()):.2e} (logits up to {float(reference.abs().max()):.2f})")


# --- main ---------------------------------------------------------------------------------------------

from app.machine import cpu_flags, cpu_name  # noqa: E402  (one definition: the plan keys on it too)


def cpu_features() -> str:
    """What decides fast mode's precision: torch's vector ISA and the CPU's bf16 / AMX flags (from /proc/cpuinfo)."""
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")
    present = [f for f in wanted if f in flags]
    absent = [f for f in wanted if f not in flags]
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    kind = "Intel AMX" if "amx_bf16" in flags else "native bf16 (AVX512-BF16)" if "avx512_bf16" in flags else \
        "no native bf16 (bf16 is emulated)"
    return f"torch ISA {capability}; has {', '.join(present) or 'none'}; lacks {', '.join(absent) or 'none'} -> {kind}"


def krypton_candidates(network: IResNet, x: torch.Tensor, target: int, exact_map: np.ndarray, exact_s: float,
                       caps: list[float], repeat: int) -> None:
    """Krypton-style projective-field thresholding (every block on crops capped at a fraction of the map)."""
    forward = inference_forward(network)
    for cap in caps:
        seconds, capped = best_of(lambda cap=cap: occlusion_map(forward, x, target=target, projective_cap=cap),
                                  repeat)
        print(f"  candidate: occlusion, Krypton cap {cap:.2f}: {seconds:.3f} s ({exact_s / seconds:.2f}x exact), "
              f"corr vs exact {corr(capped, exact_map):.5f}", flush=True)


def flops_of(run: Callable[[], Any]) -> float:
    """Floating-point operations ``run`` executes (torch's FlopCounterMode: convolutions and matrix products,
    forward and backward; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def conv_peak(network: IResNet, dtype: torch.dtype, repeat: int) -> float:
    """GFLOP/s of the convolution that dominates the network (a 3x3 block conv of layer3, the stage with most
    of the multiply-adds), batch 64, channels-last, no grad: what this CPU's oneDNN kernels reach in ``dtype``."""
    conv = network.layer3[1].conv1
    side = 112 // 8
    x = torch.randn(64, conv.in_channels, side, side).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        return torch.nn.functional.conv2d(x, weight, padding=1)

    with torch.no_grad():
        run()
        seconds = best_of(run, max(repeat, 10))[0]  # AMX and AVX-512 units take a few calls to come up to speed
        flops = flops_of(run)
    return flops / seconds / 1e9


def roofline(network: IResNet, explainer: Any, x: torch.Tensor, target: int, methods: list[str],
             exact_times: dict[str, float], naive_total: float, exact_panel: float, repeat: int) -> None:
    """How close the exact engine is to this CPU's float32 arithmetic ceiling, per method and for the panel.

    Exact mode must do the same arithmetic as naive Captum (the same passes, in float32), so its time is bounded
    below by its floating-point operations over the conv peak; ``best ratio`` is naive / that bound: no exact
    implementation on this CPU can beat it. bf16's peak is shown beside it: the headroom only fast mode can use.
    """

    peak32, peak16 = conv_peak(network, torch.float32, repeat), conv_peak(network, torch.bfloat16, repeat)
    model = explainer._model

    def fb(batch: int) -> float:
        xb = x.expand(batch, -1, -1, -1).clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        return flops_of(lambda: model(xb)[:, target].sum().backward()) / batch

    per_image = fb(4)
    forward = inference_forward(explainer._network)
    windows = occlusion_windows(112, 112, OCC_WINDOW, OCC_STRIDE)
    engine = _IncrementalOcclusion(forward, x, windows, BASELINE)
    middle = slice(len(windows) // 2 - 32, len(windows) // 2 + 32)
    per_window = flops_of(lambda: engine.logits(middle)) / 64
    passes = {"saliency": 1, "input_x_gradient": 1, "gradcam": 1, "guided_backprop": 1, "deconvolution": 1,
              "guided_gradcam": 2, "deeplift": 2, "integrated_gradients": IG_STEPS, "smoothgrad": SG_SAMPLES}
    work = {m: passes[m] * per_image for m in methods if m in passes}
    if "occlusion" in methods:
        work["occlusion"] = len(windows) * per_window
    print(f"  roofline: float32 conv peak {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s ({peak16 / peak32:.1f}x) "
          f"on this network's layer3 convolution, batch 64; forward+backward {per_image / 1e9:.2f} GFLOP per image, "
          f"incremental occlusion {per_window / 1e9:.2f} GFLOP per window")
    print(f"    {'method':<22} {'GFLOP':>8} {'exact s':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for method, flops in work.items():
        seconds = exact_times[method]
        print(f"    {method:<22} {flops / 1e9:8.1f} {seconds:8.3f} {flops / seconds / 1e9:8.0f} "
              f"{flops / seconds / 1e9 / peak32:7.0%}")
    # the panel shares passes: one gradient pass (saliency, input x gradient, Grad-CAM), one guided pass
    shared = {"gradient": per_image if {"saliency", "input_x_gradient", "gradcam", "guided_gradcam"} & set(methods)
              else 0.0, "guided": per_image if {"guided_backprop", "guided_gradcam"} & set(methods) else 0.0}
    panel_flops = sum(shared.values()) + sum(work.get(m, 0.0) for m in
                                             ("deconvolution", "deeplift", "integrated_gradients", "smoothgrad",
                                              "occlusion"))
    floor = panel_flops / (peak32 * 1e9)
    print(f"    {'panel':<22} {panel_flops / 1e9:8.1f} {exact_panel:8.3f} {panel_flops / exact_panel / 1e9:8.0f} "
          f"{panel_flops / exact_panel / 1e9 / peak32:7.0%}   at 100% of the float32 peak: {floor:.2f} s, "
          f"best possible exact ratio {naive_total / floor:.2f}x naive (measured {naive_total / exact_panel:.2f}x)")


def autocast_candidate(explainer: Any, x: torch.Tensor, target: int, exact_map: np.ndarray, fast_s: float,
                       repeat: int) -> None:
    """The other way to run fast IG: bf16 autocast around the engine's network copy (what fast mode used before the
    bf16 twin of the folded network): its time and agreement, beside the twin's."""
    from app.explain.methods.base import Context
    from app.explain.methods.integrated_gradients import integrated_gradients

    ctx = Context(model=explainer._model, layer=explainer._layer, x=x.contiguous(), target=target, batch_size=16,
                  inference=explainer._inference_forward, costs={})

    def run() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return integrated_gradients(ctx, steps=IG_STEPS, method="gausslegendre", baseline=BASELINE)[0].sum(
                dim=0).float().numpy()

    run()
    seconds, values = best_of(run, repeat)
    print(f"  candidate: IG (50 steps) under bf16 autocast of the module: {seconds:.3f} s (fast IG as chosen: "
          f"{fast_s:.3f} s, autocast takes {seconds / fast_s:.2f}x its time), corr vs exact "
          f"{corr(values, exact_map):.6f}", flush=True)


def compile_candidate(explainer: Any, x: torch.Tensor, target: int, repeat: int) -> None:
    """torch.compile (Inductor, CPU) of the engine's forward+backward at IG's batch: compile time, speed, agreement."""
    model = explainer._model
    xb = x.expand(16, -1, -1, -1).clone().contiguous(memory_format=torch.channels_last)

    def fb(m: nn.Module) -> torch.Tensor:
        xg = xb.clone().requires_grad_(True)
        return torch.autograd.grad(m(xg)[:, target].sum(), xg)[0]

    reference = fb(model)
    eager = best_of(lambda: fb(model), repeat)[0]
    import shutil
    import tempfile

    # a fresh Inductor cache, so the first call's time is a cold compile (as on a new worker), not a cache hit
    cache = tempfile.mkdtemp(prefix="gestaltlens-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        start = time.perf_counter()
        compiled = torch.compile(model, dynamic=False)
        grads = fb(compiled)
        compile_s = time.perf_counter() - start
        seconds = best_of(lambda: fb(compiled), repeat)[0]
    except Exception as exc:  # a candidate that does not run here is reported, not fatal
        print(f"  candidate: torch.compile did not run here: {type(exc).__name__}: {str(exc)[:160]}")
        return
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"  candidate: torch.compile (Inductor, CPU): first call {compile_s:.1f} s (cold compile), forward+backward "
          f"b=16 {seconds / 16 * 1000:.1f} ms per image vs eager {eager / 16 * 1000:.1f} ({eager / seconds:.2f}x), "
          f"corr {corr(grads.numpy(), reference.numpy()):.6f}, max |diff| / max |grad| "
          f"{float((grads - reference).abs().max() / reference.abs().max()):.1e}", flush=True)


def fast_plan_report(name: str, explainer: Any) -> Any:
    """Measure (or read) fast mode's plan for this network on this CPU and print what it chose and why."""
    from app.explain import fast_plan

    start = time.perf_counter()
    cached = True

    def log(_message: str) -> None:
        nonlocal cached
        cached = False

    plan = explainer.fast_plan(log=log)
    seconds = time.perf_counter() - start
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    origin = f"read from {fast_plan.plan_directory()}" if cached else \
        f"measured now in {plan.calibration_seconds:.1f} s (two probe faces)"
    print(f"\n{name}: fast-mode plan for {plan.cpu}: {origin} ({seconds:.1f} s; load average {load:.2f})")
    for note in plan.notes:
        print(f"  note: {note}")
    units = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in plan.unit_seconds.items())
    print(f"  per-unit times: {units}")
    for method_id, choice in plan.choices.items():
        print(f"  chosen {method_id:<21} {choice.describe():<34} probe corr {choice.agreement:.5f}, "
              f"est. {choice.speedup:.2f}x exact: {choice.why}")
    print(f"  candidates (corr = the lowest over the probe faces; kept = corr >= {fast_plan.CALIBRATION_BAR}):")
    for c in plan.candidates:
        amount = f"{c.get('windows', '')} windows" if c["method"] == "occlusion" else f"x{c['work']:g}"
        print(f"    {c['method']:<21} {c['precision']:<15} work {c['work']:<5g} {amount:<12} "
              f"est. {c['estimate']:8.3f} s  corr {c['agreement']:.5f}  {'kept' if c['kept'] else ''}")
    return plan


def bench_model(name: str, methods: list[str], repeat: int, crop: np.ndarray, detail: bool,
                caps: list[float], compile_candidate_too: bool = True) -> None:
    from app.explain.engine import Explainer
    from app.explain.fast import FAST_VARIANTS, MIN_FAST_CORR

    network = load_network(name)
    naive_model = LogitsOnly(copy.deepcopy(network)).eval()
    x = preprocess(crop)
    with torch.no_grad():
        logits = naive_model(x)
    target = int(logits.argmax())
    start = time.perf_counter()
    explainer = Explainer(network)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    inference_forward(explainer._network)  # what the engine builds on its first occlusion
    fold = time.perf_counter() - start
    plan = fast_plan_report(name, explainer)
    # warm-up: one forward+backward each way (allocator, oneDNN primitive caches), and each fast variant once
    NAIVE["saliency"](naive_model, x, target)
    explainer.explain(crop, target=target, methods=["saliency"])
    explainer.explain(crop, target=target, methods=[m for m in FAST_VARIANTS if m in methods] or ["saliency"],
                      params={"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 4},
                              "occlusion": {"window": 56, "stride": 56}}, mode="fast")

    t = pass_times(naive_model, x, target, repeat)
    windows = len(occlusion_windows(112, 112, OCC_WINDOW, OCC_STRIDE))
    per_bound = bounds(t, windows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{name}: target {target} (logit {float(logits[0, target]):.3f}); engine setup {setup:.2f} s "
          f"(+ {fold:.2f} s folding the inference copy on first occlusion); load average {load:.2f}")
    print(f"  pass times per image: fwd+bwd b=1 {t['fb1'] * 1000:.1f} ms, b=2 {t['fb2'] * 1000:.1f} ms, "
          f"b=16 {t['fb16'] * 1000:.1f} ms; no-grad forward b=64 {t['f64'] * 1000:.2f} ms")
    references = rule_references()
    header = (f"  {'method':<22} {'naive s':>8} {'exact s':>8} {'ratio':>7} {'fast s':>8} {'ratio':>7} "
              f"{'corr ex~naive':>13} {'corr rules':>10} {'corr fast~ex':>12} {'bound s':>8} | CPU s: "
              f"{'naive':>7} {'exact':>7} {'ratio':>6} {'fast':>7} {'ratio':>6}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    naive_total = naive_cpu_total = 0.0
    exact_maps: dict[str, np.ndarray] = {}
    exact_times: dict[str, float] = {}
    fast_times: dict[str, float] = {}
    fast_variant: dict[str, tuple[str, float, float]] = {}
    for method in methods:
        naive_s, naive_cpu, naive_map = best_of_both(lambda method=method: NAIVE[method](naive_model, x, target),
                                                     repeat)
        exact_s, exact_cpu, maps = best_of_both(
            lambda method=method: explainer.explain(crop, target=target, methods=[method]), repeat)
        naive_cpu_total += naive_cpu
        exact_maps[method], exact_times[method] = maps[method], exact_s
        naive_total += naive_s
        ruled = ""
        if method in references:
            ruled = f"{corr(maps[method], references[method](naive_model, x, target)):10.6f}"
        fast_time, agreement_cell, fast_cpu_cells = f"{'= exact':>8} {'':>7}", "", f"{'':>7} {'':>6}"
        if method in FAST_VARIANTS:
            fast_s, fast_cpu, fast_maps = best_of_both(lambda method=method: explainer.explain(
                crop, target=target, methods=[method], mode="fast"), repeat)
            fast_times[method] = fast_s
            fast_cpu_cells = f"{fast_cpu:7.2f} {naive_cpu / fast_cpu:5.2f}x"
            agreement = corr(fast_maps[method], maps[method])
            fast_time = f"{fast_s:8.3f} {naive_s / fast_s:6.2f}x"
            agreement_cell = f"{agreement:10.6f}" + ("" if agreement >= MIN_FAST_CORR else " !")
            fast_variant[method] = (plan.choice(method).describe(), agreement, fast_s / exact_s)
        print(f"  {method:<22} {naive_s:8.3f} {exact_s:8.3f} {naive_s / exact_s:6.2f}x {fast_time} "
              f"{corr(maps[method], naive_map):13.6f} {ruled:>10} {agreement_cell:>12} {per_bound[method]:8.3f} | "
              f"       {naive_cpu:7.2f} {exact_cpu:7.2f} {naive_cpu / exact_cpu:5.2f}x {fast_cpu_cells}", flush=True)
    exact_s, exact_cpu, _ = best_of_both(lambda: explainer.explain(crop, target=target, methods=methods), repeat)
    fast_s, fast_cpu, _ = best_of_both(
        lambda: explainer.explain(crop, target=target, methods=methods, mode="fast"), repeat)
    print("  " + "-" * (len(header) - 2))
    print(f"  {'panel':<22} {naive_total:8.3f} {exact_s:8.3f} {naive_total / exact_s:6.2f}x {fast_s:8.3f} "
          f"{naive_total / fast_s:6.2f}x {'':>13} {'':>10} {'':>12} {panel_bound(per_bound, methods, t):8.3f} | "
          f"       {naive_cpu_total:7.2f} {exact_cpu:7.2f} {naive_cpu_total / exact_cpu:5.2f}x {fast_cpu:7.2f} "
          f"{naive_cpu_total / fast_cpu:5.2f}x", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  (load average {load:.2f} at the end of this table; '!' = below the fast-mode bar {MIN_FAST_CORR})")
    for method, (variant, agreement, ratio) in fast_variant.items():
        verdict = "never slower: ok" if ratio <= 1.0 else "SLOWER than exact (timing noise or a wrong choice)"
        print(f"  fast {method:<21} = {variant:<34} corr with exact on the bench face {agreement:.5f}; "
              f"fast / exact time {ratio:.2f} ({verdict})")
    roofline(network, explainer, x, target, methods, exact_times, naive_total, exact_s, repeat)
    if "integrated_gradients" in methods and any("bfloat16 ruled out" in note for note in plan.notes):
        print("  candidate: IG under bf16 autocast: skipped (the plan measured bf16 no faster than float32 for this "
              "network here: see its note)")
    elif "integrated_gradients" in methods:
        autocast_candidate(explainer, x, target, exact_maps["integrated_gradients"],
                           fast_times["integrated_gradients"], repeat)
    if compile_candidate_too:
        compile_candidate(explainer, x, target, repeat)
    if caps and "occlusion" in methods:
        krypton_candidates(network, x, target, exact_maps["occlusion"], exact_times["occlusion"], caps, repeat)
    if detail and "occlusion" in methods:
        occlusion_detail(network, x, repeat)
        start = time.perf_counter()
        occlusion_map(inference_forward(network), x, target=target)
        print(f"  occlusion_map alone (incremental, 484 windows, batch 64): {time.perf_counter() - start:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,iresnet50,iresnet100",
                        help="comma-separated: demo, iresnet50, iresnet100")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per cell (the best is shown)")
    parser.add_argument("--methods", default=",".join(METHOD_IDS), help="comma-separated method ids")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--no-detail", action="store_true", help="skip the occlusion per-window breakdown")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidate (~1 min per model)")
    parser.add_argument("--krypton", default="0.9,0.6",
                        help="Krypton projective-field caps to measure as fast-occlusion candidates ('' = none)")
    parser.add_argument("--cohort-cases", default="demo:6,iresnet50:2",
                        help="cohort throughput: model:cases,... ('' = skip the cohort table)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHOD_IDS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHOD_IDS)}")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_name()} x {os.cpu_count()}, "
          f"load average {load:.2f} at start; best of {args.repeat} run(s) per cell")
    print(f"CPU features: {cpu_features()}")
    crop = face_crop()
    caps = [float(c) for c in args.krypton.split(",") if c.strip()]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        bench_model(name, methods, args.repeat, crop, detail=not args.no_detail, caps=caps,
                    compile_candidate_too=not args.no_compile)
    if args.cohort_cases:
        from bench.cohort_throughput import cohort_table

        cohort_table([(spec.split(":")[0], int(spec.split(":")[1])) for spec in args.cohort_cases.split(",")],
                     threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
