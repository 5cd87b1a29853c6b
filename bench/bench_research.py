"""Research instruments bench: composite sharpness (plain vs registered) and cohort throughput.

    python bench/bench_research.py [--faces 10] [--big-cases 2]

Table 1 — per synthetic syndrome, the variance of the Laplacian of the plain mean of the aligned crops and of the
groupwise-registered composite (app.explain.composite.register, DIS flow, 3 iterations), next to the mean
sharpness of the single crops (the ceiling a perfect registration would approach), and the registration time.

Table 2 — cases per minute of the cohort pipeline as the cohort job runs it (every case's maps for the ten-method
panel with one explainer, then registration, aggregation and the composite's own maps), for the demo model and
an iResNet-50 (random weights: speed only), with the logit and the similarity objective; and the time of the
exact similarity decomposition of one face. Faces are synthetic, through the real detection and alignment.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.explain.composite import cohort_maps, register, sharpness
from app.explain.engine import Explainer
from app.explain.objectives import Objective
from app.explain.registry import DEFAULT_PANEL
from app.synth.generate import generate_one
from app.vision.pipeline import process_photo
from bench.explain_networks import load_network

SYNDROMES = ("syn_a", "syn_c", "syn_f")


def faces(syndrome: str, n: int, seed: int = 4711) -> list[np.ndarray]:
    return [process_photo(generate_one(seed, syndrome, i).jpeg).aligned.crop for i in range(n)]


def cohort_run(network: torch.nn.Module, crops: list[np.ndarray], objective: Objective) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for the whole cohort pipeline on ``crops`` (as
    app.cohorts.worker runs it). On a shared machine the CPU time is the steadier figure: CPU s / threads is
    what the wall time would be on idle cores."""
    explainer = Explainer(network)
    explainer.explain(crops[0], objective=objective, methods=["saliency"])  # warm-up: folded copies, first pass
    started, cpu = time.perf_counter(), time.process_time()
    maps: dict[str, list[np.ndarray]] = {m: [] for m in DEFAULT_PANEL}
    for crop in crops:
        for method, values in explainer.explain(crop, objective=objective, methods=list(DEFAULT_PANEL)).items():
            maps[method].append(values)
    registration = register(crops)
    for method in DEFAULT_PANEL:
        cohort_maps(maps[method], registration.flows)
    composite = np.clip(np.round(registration.composite), 0, 255).astype(np.uint8)
    explainer.explain(composite, objective=objective, methods=list(DEFAULT_PANEL))
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=10, help="faces per syndrome (table 1, demo cohort)")
    parser.add_argument("--big-cases", type=int, default=2, help="cases of the iResNet-50 cohort run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    print("\n| syndrome | n | single crops | plain mean | registered | registration s |")
    print("|---|---|---|---|---|---|")
    cohorts = {}
    for syndrome in SYNDROMES:
        crops = faces(syndrome, args.faces)
        cohorts[syndrome] = crops
        started = time.perf_counter()
        reg = register(crops)
        took = time.perf_counter() - started
        single = float(np.mean([sharpness(c) for c in crops]))
        print(f"| {syndrome} | {len(crops)} | {single:.1f} | {sharpness(reg.plain):.1f} | "
              f"{sharpness(reg.composite):.1f} | {took:.2f} |", flush=True)

    demo = load_network("demo")
    big = load_network("iresnet50")
    crops = cohorts[SYNDROMES[0]]
    with torch.no_grad():
        reference = demo(torch.zeros(1, 3, 112, 112))[1][0].numpy()
    print("\n| model | objective | cases | wall s | CPU s | cases / minute (wall) | cases / minute (idle 2 cores) |")
    print("|---|---|---|---|---|---|---|")
    for name, network, subset in (("demo", demo, crops), ("iresnet50 (random)", big, crops[:args.big_cases])):
        for objective in (Objective.logit(1), Objective.similarity(reference, name="similarity:centroid:syn_a")):
            wall, cpu = cohort_run(network, subset, objective)
            idle = cpu / torch.get_num_threads()
            print(f"| {name} | {objective.kind} | {len(subset)} | {wall:.1f} | {cpu:.1f} | "
                  f"{60 * len(subset) / wall:.1f} | {60 * len(subset) / idle:.1f} |", flush=True)

    for name, network in (("demo", demo), ("iresnet50 (random)", big)):
        explainer = Explainer(network)
        objective = Objective.similarity(reference, name="similarity:case:x")
        explainer.explain(crops[0], objective=objective, methods=["similarity_decomposition"])
        started = time.perf_counter()
        for _ in range(5):
            explainer.explain(crops[0], objective=objective, methods=["similarity_decomposition"])
        print(f"similarity decomposition, {name}: {(time.perf_counter() - started) / 5 * 1000:.0f} ms per face")


if __name__ == "__main__":
    main()
