"""The evaluation's own cost: seconds per method and image for the map and for each metric family.

    python bench/bench_evaluate.py [--faces 4] [--methods saliency,gradcam,...] [--threads 1]

On the demo model and the synthetic benchmark set (seed 1000, severity 1): for every method, the time to
compute the map (the engine alone, one method per call), localisation (three scores and the centre prior),
deletion + insertion curves (4 curves × 17 points = 68 forward passes), ROAD (MoRF + LeRF at 5 fractions:
10 noisy linear imputations + 12 forward passes), context shares, and one cascading-randomisation
sanity run (6 stages = 6 more maps). Median over the faces; the load average is printed, since torch's
threads spin and a busy machine slows every number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.evaluate import context, faithfulness, localisation, sanity
from app.evaluate.benchmark import BenchmarkSpec, build_benchmark
from app.explain.engine import Explainer, prepare_input
from app.explain.registry import DEFAULT_PANEL
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--methods", default=",".join(DEFAULT_PANEL))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classes = ("syn_a", "syn_c", "syn_e", "syn_g", "syn_b", "syn_d", "syn_f", "syn_h")[: args.faces]
    started = time.perf_counter()
    bench = build_benchmark(BenchmarkSpec(per_class=1, classes=classes))
    build_s = (time.perf_counter() - started) / max(1, len(bench.faces))
    model = load_model(PROJECT_ROOT / "models", "demo")
    labels = [label.id for label in model.labels]
    explainer = Explainer(model.network, gradcam_layer=model.card.gradcam_layer)
    random_nets = [net for _, net in sanity.cascading_randomisation(model.network)]
    random_explainers = [Explainer(net, gradcam_layer=model.card.gradcam_layer) for net in random_nets]
    rows = []
    for method in args.methods.split(","):
        times: dict[str, list[float]] = {k: [] for k in ("map", "localisation", "del+ins", "ROAD", "context",
                                                         "sanity")}
        for face in bench.faces:
            target = labels.index(face.label)
            image = prepare_input(face.crop)[0].numpy()

            def score(batch: np.ndarray, target: int = target) -> np.ndarray:
                with torch.no_grad():
                    return model.network(torch.from_numpy(batch))[0][:, target].numpy()

            t = time.perf_counter()
            values = explainer.explain(face.crop, target=target, methods=[method])[method]
            times["map"].append(time.perf_counter() - t)
            t = time.perf_counter()
            localisation.score_map(values, face.mask)
            localisation.score_map(localisation.centre_prior(), face.mask)
            times["localisation"].append(time.perf_counter() - t)
            t = time.perf_counter()
            faithfulness.evaluate_faithfulness(score, image, values, road_percentages=None)
            times["del+ins"].append(time.perf_counter() - t)
            t = time.perf_counter()
            faithfulness.road_curve(score, image, values)
            faithfulness.road_curve(score, image, values, most_relevant_first=False)
            times["ROAD"].append(time.perf_counter() - t)
            t = time.perf_counter()
            context.context_shares(values)
            times["context"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for random_explainer in random_explainers:
                random_maps = random_explainer.explain(face.crop, target=target, methods=[method])[method]
                sanity.similarities(values, random_maps)
            times["sanity"].append(time.perf_counter() - t)
        rows.append((method, {k: statistics.median(v) for k, v in times.items()}))
    load = os.getloadavg()[0]
    print(f"demo model, {len(bench.faces)} faces, torch {torch.__version__}, {args.threads} thread(s), "
          f"{os.cpu_count()} CPUs, load average {load:.1f}; benchmark face build {build_s:.2f} s/face")
    header = ["method", "map", "localisation", "del+ins", "ROAD", "context", "sanity", "total"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for method, t in rows:
        total = sum(t.values())
        print(f"| {method} | " + " | ".join(f"{t[k]:.3f}" for k in header[1:-1]) + f" | {total:.2f} s |")


if __name__ == "__main__":
    main()
