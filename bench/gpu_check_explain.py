"""The explanation engine on a GPU against the same engine on the CPU: time and agreement of every method's map.

    python bench/gpu_check_explain.py [--models demo,iresnet50] [--device cuda] [--repeat N] [--cpu-repeat N]
                                      [--methods a,b,...] [--crop CROP.npy] [--threads N]

Per model, one :class:`~app.explain.engine.Explainer` on the CPU and one on ``--device`` (default ``cuda``); per
method the best-of-``--repeat`` (CPU: ``--cpu-repeat``) time of ``explain(crop, methods=[m])`` on each (after a
warm-up that also builds each side's folded occlusion copy), the speed-up, the Pearson correlation of the two
maps and their largest difference relative to the CPU map's largest magnitude. The panel row is the whole default
panel in one call.

Deterministic methods must agree: the exit status is 1 if any has ``corr`` < 0.999 (or a map is not a finite
float32 (112, 112) numpy array). SmoothGrad draws its noise from a generator on the device, and CUDA's Philox
numbers are not the CPU's, so its cpu/device correlation is shown only; what is checked instead is that a seed
reproduces its map on the device (two runs with one seed: corr >= 0.999), beside two different seeds for scale.

The ``tf32`` columns run the device explainer with ``allow_tf32=True`` (cuDNN's own default for convolutions),
to show what the engine's full-float32 default costs in time and buys in agreement; they are informational
(blank with ``--device cpu``, the smoke mode that runs the whole check on a machine without a GPU).

The crop is ``--crop`` (a uint8 (112, 112, 3) .npy), else an aligned synthetic face if the photo pipeline
imports, else smooth colour noise. Imports only ``app.nets``, ``app.explain`` and ``tests.nets.helpers`` (for
the random iResNet-50, as in bench/bench_explain.py), so it runs where the web stack is not installed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.explain.engine import Explainer, resolve_device
from app.explain.registry import METHODS
from app.nets.preprocess import preprocess
from bench.explain_networks import load_network

METHOD_IDS = tuple(METHODS)
MIN_CORR = 0.999
#: parameters that make occlusion a single window: a cheap way to build each explainer's folded copy in warm-up
ONE_WINDOW = {"occlusion": {"window": 112, "stride": 112}}


def smooth_crop(seed: int = 0) -> np.ndarray:
    """uint8 (112, 112, 3): bicubic-upsampled 14x14 colour noise plus grain (as tests/explain/conftest.py)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 14, 14)).astype(np.float32))
    image = F.interpolate(coarse, size=(112, 112), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    image = image.numpy() + rng.normal(0, 4, (112, 112, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def load_crop(path: str | None) -> tuple[np.ndarray, str]:
    if path:
        crop = np.load(path)
        if crop.shape != (112, 112, 3) or crop.dtype != np.uint8:
            raise SystemExit(f"{path}: expected a uint8 (112, 112, 3) array, got {crop.dtype} {crop.shape}")
        return crop, f"{path}"
    try:
        from app.synth.generate import generate_one
        from app.vision.pipeline import process_photo
    except ImportError as exc:
        return smooth_crop(0), f"smooth colour noise (no photo pipeline here: {exc})"
    return process_photo(generate_one(0, "syn_a", 0).jpeg).aligned.crop, "synthetic face syn_a #0, aligned"


def best_of(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def rel_diff(a: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(np.asarray(a, np.float64) - reference).max()) / scale


def well_formed(result: Any) -> bool:
    return (isinstance(result, np.ndarray) and result.dtype == np.float32 and result.shape == (112, 112)
            and bool(np.isfinite(result).all()))


def precision_switches() -> tuple[Any, ...]:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def check_model(name: str, device: torch.device, methods: list[str], repeat: int, cpu_repeat: int,
                crop: np.ndarray) -> list[str]:
    """Prints one model's table; returns its failures."""
    failures: list[str] = []
    network = load_network(name)
    with torch.no_grad():
        target = int(network(preprocess(crop))[0].argmax())
    on_gpu = device.type != "cpu"
    start = time.perf_counter()
    cpu = Explainer(network, device="cpu")
    dev = Explainer(network, device=device)
    tf32 = Explainer(network, device=device, allow_tf32=True) if on_gpu else None
    setup = time.perf_counter() - start
    switches = precision_switches()
    for explainer in (cpu, dev, tf32):  # warm-up: allocator, cuDNN algorithm choice, the folded occlusion copy
        if explainer is not None:
            explainer.explain(crop, target=target, methods=["saliency", "occlusion"], params=ONE_WINDOW)
    if on_gpu:
        dev.explain(crop, target=target, methods=methods)
        assert tf32 is not None
        tf32.explain(crop, target=target, methods=methods)
    built = "cpu, device and tf32 explainers" if on_gpu else "cpu and device explainers"
    print(f"\n{name}: target {target}; {built} built in {setup:.2f} s; {device} vs cpu", flush=True)
    dev_label = device.type
    header = (f"  {'method':<22} {'cpu s':>8} {dev_label + ' s':>8} {'speed-up':>9} {'corr':>10} {'max rel':>9}"
              f" {'tf32 s':>8} {'tf32 corr':>10} {'tf32 rel':>9}  note")
    print(header)
    print("  " + "-" * (len(header) - 2))

    def timed(explainer: Explainer, method_ids: list[str]) -> tuple[float, dict[str, np.ndarray]]:
        runs = cpu_repeat if explainer is cpu else repeat
        return best_of(lambda: explainer.explain(crop, target=target, methods=method_ids), runs)

    for method in methods:
        cpu_s, cpu_maps = timed(cpu, [method])
        dev_s, dev_maps = timed(dev, [method])
        c, r = corr(dev_maps[method], cpu_maps[method]), rel_diff(dev_maps[method], cpu_maps[method])
        tf32_cells = f"{'':>8} {'':>10} {'':>9}"
        if tf32 is not None:
            tf32_s, tf32_maps = timed(tf32, [method])
            tf32_cells = (f"{tf32_s:8.3f} {corr(tf32_maps[method], cpu_maps[method]):10.6f} "
                          f"{rel_diff(tf32_maps[method], cpu_maps[method]):9.1e}")
        note = ""
        if not (well_formed(cpu_maps[method]) and well_formed(dev_maps[method])):
            failures.append(f"{name}/{method}: map is not a finite float32 (112, 112) numpy array")
            note = "MALFORMED"
        elif METHODS[method].deterministic and not c >= MIN_CORR:
            failures.append(f"{name}/{method}: corr {c:.6f} < {MIN_CORR}")
            note = f"FAIL (< {MIN_CORR})"
        elif not METHODS[method].deterministic:
            note = "different RNG on each side: shown only"
        print(f"  {method:<22} {cpu_s:8.3f} {dev_s:8.3f} {cpu_s / dev_s:8.1f}x {c:10.6f} {r:9.1e} {tf32_cells}  {note}",
              flush=True)

    cpu_s, _ = timed(cpu, methods)
    dev_s, _ = timed(dev, methods)
    tf32_cells = f"{'':>8}"
    if tf32 is not None:
        tf32_cells = f"{timed(tf32, methods)[0]:8.3f}"
    print("  " + "-" * (len(header) - 2))
    print(f"  {'panel (one call)':<22} {cpu_s:8.3f} {dev_s:8.3f} {cpu_s / dev_s:8.1f}x {'':>10} {'':>9} {tf32_cells}",
          flush=True)

    if "smoothgrad" in methods:
        seed = METHODS["smoothgrad"].defaults["seed"]
        first = dev.explain(crop, target=target, methods=["smoothgrad"])["smoothgrad"]
        again = dev.explain(crop, target=target, methods=["smoothgrad"])["smoothgrad"]
        other = dev.explain(crop, target=target, methods=["smoothgrad"],
                            params={"smoothgrad": {"seed": seed + 1}})["smoothgrad"]
        same = corr(first, again)
        print(f"  smoothgrad on {device}: seed {seed} twice corr {same:.6f} (max rel {rel_diff(again, first):.1e}); "
              f"seeds {seed} and {seed + 1} corr {corr(first, other):.6f}")
        if not same >= MIN_CORR:
            failures.append(f"{name}/smoothgrad: one seed twice on {device} gives corr {same:.6f} < {MIN_CORR}")
    if precision_switches() != switches:
        failures.append(f"{name}: the engine left the float32 precision switches changed: {switches} -> "
                        f"{precision_switches()}")
    print(f"  float32 precision switches (cuDNN conv, matmul) {switches}: "
          f"{'unchanged after the runs' if precision_switches() == switches else 'CHANGED'}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,iresnet50", help="comma-separated: demo, iresnet50")
    parser.add_argument("--device", default="cuda", help="device to compare with the CPU (cpu: smoke mode)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per device cell (the best is shown)")
    parser.add_argument("--cpu-repeat", type=int, default=1, help="timed runs per CPU cell (the best is shown)")
    parser.add_argument("--methods", default=",".join(METHOD_IDS), help="comma-separated method ids")
    parser.add_argument("--crop", default=None, help="uint8 (112, 112, 3) .npy crop (default: see the docstring)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHOD_IDS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHOD_IDS)}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")

    gpu = "no GPU"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
               f"cuDNN {torch.backends.cudnn.version()}")
    print(f"torch {torch.__version__}; {torch.get_num_threads()} CPU threads; {gpu}; best of {args.repeat} run(s) "
          f"per {device.type} cell, {args.cpu_repeat} per cpu cell, after a warm-up")
    crop, crop_label = load_crop(args.crop)
    print(f"crop: {crop_label}")
    failures: list[str] = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        failures += check_model(name, device, methods, args.repeat, args.cpu_repeat, copy.deepcopy(crop))
    print()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"OK: every deterministic method agrees with the CPU (corr >= {MIN_CORR}) on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
