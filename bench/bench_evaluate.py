"""The evaluation's own cost: per metric and face, the whole default run, and the run under load.

    python bench/bench_evaluate.py [--faces 2] [--methods ...] [--threads 2] [--fit] [--loads 0,2,4] [--run]
    python bench/bench_evaluate.py --face-counts [--from scorecard.json | --pool-per-class 6] [--draws 30] [--save F]

1. **Per metric, per face** (demo model, synthetic benchmark faces): for every method the map, and each
   metric family on it (localisation incl. top-k/AUC, deletion + insertion in |map| order, the signed order,
   ROAD, complexity, context), then the per-face costs shared by all methods (faithfulness correlation's 101
   forward passes, context occlusion) and the per-face cost of the sanity checks (7 cascade + 6 independent
   networks + the random logit = 14 maps) and of robustness (3 noisy maps). Seconds (median over faces) and
   the expected cost in *passes* (app.evaluate.plan), which does not depend on the machine's load.
2. ``--fit``: seconds per pass at 1 and 2 threads (a saliency map: one forward + backward), written to
   ``app/evaluate/cost_model.json`` with the machine and load; the Evaluation page's expected duration and the
   progress weights use it.
3. ``--loads 0,2,4``: the same reduced scorecard with ``N`` busy processes beside it (each a one-thread torch
   matmul loop), once with 2 threads and once with the threads :func:`app.evaluate.threads.fair_threads`
   picks; prints the time ratio to the unloaded run and the share of the cores the run could expect: it is one
   of N + 1 busy processes on 2 cores, so 2 / (N + 1) cores against the 2 it had alone. A run that degrades no
   worse than its share has ratio ≤ N + 1. (An earlier version printed (N + 1) / 2, as if the run were owed
   2 / (N + 1) *of the machine*: twice its fair share.)
4. ``--run``: the default ``gestaltlens evaluate`` (all ten methods), timed, with its phase times.
5. ``--face-counts``: the 95 % interval half-width of the scorecard's columns as a function of the number of
   faces, by subsampling a run's per-face values (``--from`` a stored ``scorecard.json``, or a pool run of
   ``--pool-per-class`` faces per syndrome, per-face pass only), the expected default run at each count, and the
   count :mod:`app.evaluate.face_count` picks from its targets (the default ``per_class`` rests on it).

Every table says the load average it was measured at: a shared machine slows every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.evaluate import complexity, context, faithfulness, localisation, plan, robustness, sanity
from app.evaluate.benchmark import BenchmarkSpec, build_benchmark
from app.explain.engine import Explainer, prepare_input
from app.explain.registry import DEFAULT_PANEL, METHODS
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT

CLASSES = ("syn_a", "syn_c", "syn_e", "syn_g", "syn_b", "syn_d", "syn_f", "syn_h")


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def per_metric(model, faces, methods: list[str]) -> None:
    labels = [label.id for label in model.labels]
    explainer = Explainer(model.network, gradcam_layer=model.card.gradcam_layer)
    random_nets = [net for _, net in sanity.cascading_randomisation(model.network)]
    random_nets += [net for i, (_, net) in enumerate(sanity.independent_randomisation(model.network)) if i > 0]
    random_explainers = [Explainer(net, gradcam_layer=model.card.gradcam_layer) for net in random_nets]
    rows, shared = [], {"correlation (101 fwd)": [], "context occlusion": []}
    for method in methods:
        times: dict[str, list[float]] = {k: [] for k in ("map", "localisation", "del+ins |map|", "deletion signed",
                                                         "ROAD", "complexity", "context", "sanity (14 maps)",
                                                         "robustness (3 maps)")}
        for face in faces:
            target = labels.index(face.label)
            image = prepare_input(face.crop)[0].numpy()

            def score(batch: np.ndarray, target: int = target) -> np.ndarray:
                with torch.no_grad():
                    return model.network(torch.from_numpy(np.ascontiguousarray(batch)))[0][:, target].numpy()

            t = time.perf_counter()
            values = explainer.explain(face.crop, target=target, methods=[method])[method]
            times["map"].append(time.perf_counter() - t)
            t = time.perf_counter()
            localisation.score_map(values, face.mask)
            times["localisation"].append(time.perf_counter() - t)
            t = time.perf_counter()
            faithfulness.evaluate_faithfulness(score, image, values, road_percentages=None)
            times["del+ins |map|"].append(time.perf_counter() - t)
            t = time.perf_counter()
            if METHODS[method].signed:  # the scorecard's signed order: deletion only
                for first in (True, False):
                    faithfulness.deletion_curve(score, image, values, order="signed", most_relevant_first=first)
            times["deletion signed"].append(time.perf_counter() - t)
            t = time.perf_counter()
            faithfulness.road_curve(score, image, values)
            faithfulness.road_curve(score, image, values, most_relevant_first=False)
            times["ROAD"].append(time.perf_counter() - t)
            t = time.perf_counter()
            complexity.sparseness(values)
            complexity.complexity(values)
            times["complexity"].append(time.perf_counter() - t)
            t = time.perf_counter()
            context.context_shares(values)
            times["context"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for random_explainer in random_explainers:
                random_maps = random_explainer.explain(face.crop, target=target, methods=[method])[method]
                sanity.similarities(values, random_maps)
            explainer.explain(face.crop, target=(target + 1) % explainer.num_classes, methods=[method])
            times["sanity (14 maps)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for copy in robustness.noisy_copies(image, 3):
                explainer.explain(torch.from_numpy(copy[None]), target=target, methods=[method])
            times["robustness (3 maps)"].append(time.perf_counter() - t)
            if method == methods[0]:
                t = time.perf_counter()
                subsets = faithfulness.random_subsets(image.shape)
                faithfulness.subset_drops(score, image, subsets)
                shared["correlation (101 fwd)"].append(time.perf_counter() - t)
                t = time.perf_counter()
                context.context_occlusion(lambda b: model.network(torch.from_numpy(b))[0].detach().numpy(),
                                          image, target)
                shared["context occlusion"].append(time.perf_counter() - t)
        rows.append((method, {k: statistics.median(v) for k, v in times.items()}, plan.map_passes([method])))
    header = ["method", "map passes", *rows[0][1].keys(), "per face (scorecard)"]
    print(f"\n### Seconds per face and method (median of {len(faces)} faces), load {_load()}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for method, t, passes in rows:
        per_face = sum(v for k, v in t.items() if not k.startswith(("sanity", "robustness")))
        print(f"| {method} | {passes:g} | " + " | ".join(f"{v:.3f}" for v in t.values()) + f" | {per_face:.2f} |")
    print("\nShared per face (all methods): " + ", ".join(f"{k} {statistics.median(v):.3f} s"
                                                     for k, v in shared.items()))


def fit(model, faces, path: Path) -> dict:
    labels = [label.id for label in model.labels]
    explainer = Explainer(model.network, gradcam_layer=model.card.gradcam_layer)
    per_pass = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        explainer.explain(faces[0].crop, target=labels.index(faces[0].label), methods=["saliency"])
        times = []
        for face in faces:
            t = time.perf_counter()
            explainer.explain(face.crop, target=labels.index(face.label), methods=["integrated_gradients"],
                              params={"integrated_gradients": {"steps": 50}})
            times.append((time.perf_counter() - t) / 50)
        per_pass[str(threads)] = round(statistics.median(times), 5)
    model_fit = {"seconds_per_pass": per_pass, "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
                 "load": os.getloadavg()[0], "fitted": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path.write_text(json.dumps(model_fit, indent=1) + "\n", encoding="utf-8")
    print(f"\ncost model → {path}: {model_fit}")
    return model_fit


def _busy(stop: multiprocessing.Event) -> None:  # one core's worth of someone else's work
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def _small_run(model, benchmark, threads: int) -> float:
    from app.evaluate.scorecard import EvaluationOptions, evaluate_model
    from app.evaluate.threads import torch_threads

    options = EvaluationOptions(sanity_faces=2, robustness_samples=1, correlation_runs=20, road_percentages=(0.5,),
                                ig_tolerance=0.0, similarity_methods=())
    with torch_threads(threads):
        t = time.perf_counter()
        evaluate_model(model.network, [label.id for label in model.labels], benchmark,
                       ["saliency", "gradcam", "integrated_gradients"], gradcam_layer=model.card.gradcam_layer,
                       options=options)
        return time.perf_counter() - t


def under_load(model, benchmark, loads: list[int]) -> None:
    from app.evaluate.threads import fair_threads

    print(f"\n### A reduced scorecard (3 methods, {len(benchmark.faces)} faces) beside N busy processes "
          f"(load before: {_load()})\n")
    print("| busy processes | fair threads | s with 2 threads | s with fair threads | ratio (fair / unloaded) | "
          "allowed by its share (N + 1) |")
    print("|---|---|---|---|---|---|")
    base = None
    for n in loads:
        stop = multiprocessing.Event()
        workers = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(n)]
        for w in workers:
            w.start()
        time.sleep(3 if n else 0)
        fair = fair_threads(load=float(n))
        two = _small_run(model, benchmark, 2)
        mine = _small_run(model, benchmark, fair)
        stop.set()
        for w in workers:
            w.join()
        base = base or mine
        print(f"| {n} | {fair} | {two:.1f} | {mine:.1f} | {mine / base:.2f} | {n + 1:.1f} |")


def full_run(fit_path: Path | None = None) -> None:
    """Time the default run; with ``fit_path`` (``--fit --run``) refit the seconds per pass *from this run*: the
    whole run's seconds over its plan's passes. Why: one saliency map's pass (the quick fit) is cheaper than the
    run's average pass (occlusion, sanity networks, curves in batches), and predicted 117 s for a 178 s run."""
    from app.evaluate.command import EvaluationSpec, run_evaluation
    from app.evaluations.service import expected_duration

    model = load_model(PROJECT_ROOT / "models", "demo")
    t = time.perf_counter()
    card = run_evaluation(model.network, [label.id for label in model.labels], model.card.gradcam_layer,
                          EvaluationSpec())
    elapsed, threads = time.perf_counter() - t, card["timings"]["threads"]
    print(f"\n### Default scorecard (all ten methods, {card['benchmark']['n_faces']} faces): "
          f"{elapsed:.0f} s with {threads} thread(s), load {_load()}")
    print("phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in card["timings"]["phases"].items()))
    if fit_path is not None:
        model_json = json.loads(fit_path.read_text())
        per_pass = model_json["seconds_per_pass"]
        passes = expected_duration(EvaluationSpec())["seconds"] / per_pass[str(threads)]
        scale = elapsed / passes / per_pass[str(threads)]
        model_json["seconds_per_pass"] = {k: round(v * scale, 5) for k, v in per_pass.items()}
        model_json["machine"] += f"; from the default run: {passes:.0f} passes in {elapsed:.0f} s"
        fit_path.write_text(json.dumps(model_json, indent=1) + "\n")
        print(f"cost model refitted from the run: {model_json['seconds_per_pass']}")


def face_count_pool(per_class: int, out: Path) -> Path:
    """The per-face values the face-count choice subsamples: every method of the default panel on ``per_class``
    faces of each syndrome (seed 1000, as the default run), written as a scorecard (``per_image``) to ``out``.

    Only the per-face pass runs (no sanity, robustness, step rule or similarity maps): the face count sets the
    per-face metrics' intervals, the sanity and robustness faces are a separate count. Threads: the fair count
    (one on a busy machine), which changes the time, never the numbers."""
    from app.evaluate.command import EvaluationSpec, _versions, build_benchmarks, write_outputs
    from app.evaluate.scorecard import EvaluationOptions, evaluate_model
    from app.evaluate.threads import fair_threads, torch_threads

    model = load_model(PROJECT_ROOT / "models", "demo")
    spec = EvaluationSpec(per_class=per_class, sanity_faces=0, robustness_samples=0, ig_tolerance=0.0).resolved()
    threads = fair_threads()
    started, load_before = time.perf_counter(), _load()
    with torch_threads(threads):
        benchmark = build_benchmarks(spec)
        card = evaluate_model(model.network, [label.id for label in model.labels], benchmark, list(spec.methods),
                              gradcam_layer=model.card.gradcam_layer,
                              options=EvaluationOptions(sanity_faces=0, robustness_samples=0, ig_tolerance=0.0,
                                                        similarity_methods=()))
    card["spec"] = spec.to_dict()
    card["model"] = {"id": model.card.id, "version": model.card.version}
    card["versions"] = _versions()
    card["timings"].update(threads=threads, run_seconds=round(time.perf_counter() - started, 1),
                           load=f"{load_before} → {_load()}")
    write_outputs(card, out)
    print(f"face-count pool: {card['benchmark']['n_faces']} faces, {card['timings']['run_seconds']} s with "
          f"{threads} thread(s), load {card['timings']['load']} → {out / 'scorecard.json'}")
    return out / "scorecard.json"


def face_counts(card_path: Path | None, pool_per_class: int, draws: int, save: Path | None) -> None:
    """Interval half-width against faces per syndrome, from a run's per-face values; the count the targets pick.

    ``card_path``: a stored ``scorecard.json`` (any run's ``per_image``) or a saved pool (``--save``'s columns);
    None: a pool run of ``pool_per_class`` faces per syndrome first (:func:`face_count_pool`). ``save`` keeps the
    pool's per-face columns (what the default count rests on, ``bench/results/face_count_pool-*.json``)."""
    from app.evaluate import face_count
    from app.evaluate.command import EvaluationSpec
    from app.evaluations.service import expected_duration

    if card_path is None:
        card_path = face_count_pool(pool_per_class, PROJECT_ROOT / "var" / "face_count_pool")  # git-ignored
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if save is not None:
        save.write_text(json.dumps(face_count.pool_values(card), separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"per-face columns → {save}")
    labels, values = face_count.per_face_values(card)
    classes = len(set(labels))
    counts = list(range(1, min(labels.count(c) for c in set(labels)) + 1))
    t = time.perf_counter()
    widths = face_count.half_widths(labels, values, counts, draws=draws)
    choice = face_count.choose_face_count(widths, classes, face_count.targets(card))
    print(f"\n### 95 % interval half-width by face count ({card_path}: {len(labels)} faces, {classes} syndromes, "
          f"{len(card['methods'])} methods; {draws} stratified subsets a count; {time.perf_counter() - t:.0f} s)\n")
    print("Key columns: the median method's half-width against its target, and the widest method:\n")
    print(choice.table())
    reported = [m for m in face_count.REPORTED if m in values]
    print("\nOther columns, median method (widest in brackets), and the default run's expected seconds on 2 idle "
          "cores (cost model):\n")
    print("| faces | " + " | ".join(reported) + " | expected default run (s) |")
    print("|---|" + "---|" * (len(reported) + 1))
    for k in counts:
        cells = [f"{statistics.median(widths[k][m].values()):.3f} ({max(widths[k][m].values()):.3f})"
                 for m in reported]
        expected = expected_duration(EvaluationSpec(per_class=k))
        print(f"| {k * classes} | " + " | ".join(cells) + f" | {expected['seconds'] if expected else '?'} |")
    if choice.per_class:
        print("\nPer method at the chosen count:\n")
        for method in card["methods"]:
            print(f"  {method:22s} " + "  ".join(f"{m} ±{widths[choice.per_class][m][method]:.3f}"
                                                 for m in choice.targets))
    print(f"\nchosen: {choice.faces} faces ({choice.per_class} per syndrome)" if choice.per_class else
          "\nNo count in the pool meets the targets.")
    print(f"the default: {face_count.DEFAULT_PER_CLASS} per syndrome (EvaluationSpec().per_class = "
          f"{EvaluationSpec().per_class})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=2)
    parser.add_argument("--methods", default=",".join(DEFAULT_PANEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fit", action="store_true", help="write app/evaluate/cost_model.json")
    parser.add_argument("--loads", default="", help="busy processes beside a reduced run, e.g. 0,2,4")
    parser.add_argument("--run", action="store_true", help="time the default gestaltlens evaluate")
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--face-counts", action="store_true",
                        help="interval half-width by face count, and the count app.evaluate.face_count picks")
    parser.add_argument("--from", dest="from_card", type=Path, default=None,
                        help="with --face-counts: a stored scorecard.json instead of a pool run")
    parser.add_argument("--pool-per-class", type=int, default=6, help="with --face-counts: the pool run's faces")
    parser.add_argument("--draws", type=int, default=30, help="with --face-counts: subsets per count")
    parser.add_argument("--save", type=Path, default=None, help="with --face-counts: keep the pool's per-face columns")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.face_counts:  # needs no per-metric table: the pool run (or stored run) is its data
        face_counts(args.from_card, args.pool_per_class, args.draws, args.save)
        return
    started = time.perf_counter()
    bench = build_benchmark(BenchmarkSpec(per_class=1, classes=CLASSES[: args.faces]))
    build_s = (time.perf_counter() - started) / max(1, len(bench.faces))
    model = load_model(PROJECT_ROOT / "models", "demo")
    print(f"demo model, {len(bench.faces)} faces, torch {torch.__version__}, {args.threads} thread(s), "
          f"{os.cpu_count()} CPUs, load average {_load()}; benchmark face build {build_s:.2f} s/face")
    if not args.skip_metrics:
        per_metric(model, bench.faces, args.methods.split(","))
    if args.fit:
        fit(model, bench.faces, plan.COST_MODEL_PATH)
    if args.loads:
        under_load(model, bench, [int(n) for n in args.loads.split(",")])
    if args.run:
        full_run(plan.COST_MODEL_PATH if args.fit else None)
    print(f"\nload average at the end: {_load()}")


if __name__ == "__main__":
    main()
