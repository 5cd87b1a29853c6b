"""Class-imbalance and shortcut experiment (thesis 6.3): do explanations for a rare syndrome, or for a model
trained with a shortcut cue, localise worse, and can the evaluation metrics detect a shortcut?

Conditions, all from one generated data set (``gestaltlens synth`` with a fixed seed), so only the factor
under study changes:

* ``balanced``: every class keeps its training images;
* ``rare_1to4`` / ``rare_1to16`` (or the ratios given): the *rare class* keeps 1/4 (1/16) of its training
  images (the first ones by index); every test split is untouched, so accuracy is measured on the same faces;
* ``shortcut``: the same faces, but images carry the generator's sticker cue (beside the face, in hair or
  background) with probability 0.9 in the rare class and 0.05 elsewhere. Because the generator draws the
  cue from a stream of its own, a face is the same with or without it: only the images that carry the cue
  are rendered again (through the real detection and alignment), the others are reused.

Each condition trains a demo-size model (iResNet-18 ×0.25, ``app.nets.train``), then measures per-class
accuracy and the scorecard (:mod:`app.evaluate.scorecard`) on the test faces of the base data set, for the
rare class and the others apart. It writes ``report.json`` (every number), ``report.md`` and PNG plots.

Run: ``python -m app.evaluate.imbalance --data var/imbalance/data-120 --out reports/imbalance``
(the committed report names its exact commands).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["derive_dataset", "main", "run_experiment"]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def derive_dataset(base: Path, out: Path, *, rare_class: str, keep_fraction: float = 1.0,
                   shortcut: bool = False) -> dict[str, int]:
    """A data set folder that reuses ``base``'s files: the rare class's training images cut to
    ``keep_fraction`` (the first by index), and with ``shortcut`` the cue images rendered again into ``out``.
    Returns the training counts per class."""
    from app.synth.dataset import _Job, _record, read_manifest
    from app.synth.generate import ShortcutSpec
    from app.vision.detect import FaceDetector

    base = base.resolve()
    if out.exists():
        shutil.rmtree(out)
    for sub in ("images", "masks", "aligned", "aligned_masks"):
        (out / sub).mkdir(parents=True)
    info = json.loads((base / "dataset.json").read_text(encoding="utf-8"))
    records = read_manifest(base)
    rare_train = [r for r in records if r["label"] == rare_class and r["split"] == "train"]
    keep = max(1, round(len(rare_train) * keep_fraction))
    dropped = {r["id"] for r in rare_train[keep:]}
    spec = ShortcutSpec(class_id=rare_class) if shortcut else None
    detector = FaceDetector() if shortcut else None
    job = _Job(out=out, seed=int(info["seed"]), shortcut=spec)
    lines, counts = [], {}
    for record in records:
        if record["id"] in dropped:
            continue
        index = int(str(record["id"]).rsplit("-", 1)[1])
        if spec is not None and spec.present(int(info["seed"]), str(record["label"]), index):
            from app.synth.dataset import Task
            record = _record(Task(str(record["label"]), index, str(record["split"])), job, detector)
        else:
            record = dict(record)
            for key in ("image", "mask", "aligned", "aligned_mask"):
                if record.get(key):
                    record[key] = str(base / str(record[key]))
        lines.append(json.dumps(record))
        if record["split"] == "train":
            counts[str(record["label"])] = counts.get(str(record["label"]), 0) + 1
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info.update({"derived_from": str(base), "rare_class": rare_class, "keep_fraction": keep_fraction,
                 "shortcut": spec.to_dict() if spec else None, "train_counts": counts})
    _write_json(out / "dataset.json", info)
    return counts


def _summarise(cards: list[dict[str, Any]], rare_class: str) -> dict[str, Any]:
    """Per method: localisation, deletion gap and context share over the rare class and the rest, pooled over the
    training seeds' scorecards (one per seed), each with a 95 % bootstrap interval over faces × seeds."""
    from app.evaluate.localisation import bootstrap_ci

    keys = ("pointing", "mass", "rank", "deletion_morf_auc", "context", "hair_background")
    out: dict[str, Any] = {}
    for method in cards[0]["methods"]:
        rows = [(r["label"], r["methods"][method]) for card in cards for r in card["per_image"]]
        groups = {"rare": [m for label, m in rows if label == rare_class],
                  "others": [m for label, m in rows if label != rare_class]}
        out[method] = {}
        for g, ms in groups.items():
            out[method][g] = {k: (sum(float(m[k]) for m in ms) / len(ms) if ms else None) for k in keys}
            out[method][g]["ci"] = {k: bootstrap_ci([float(m[k]) for m in ms]).to_dict() for k in ("mass", "pointing")
                                    } if ms else {}
        gaps = [float(m["deletion_gap"]) for _, m in rows]
        out[method]["deletion_gap"] = sum(gaps) / len(gaps)
        out[method]["context_areas"] = {
            k: sum(c["scores"][method]["context"]["areas"][k]["mean"] for c in cards) / len(cards)
            for k in cards[0]["scores"][method]["context"]["areas"]}
    return out


def run_experiment(data: Path, out: Path, *, rare_class: str = "syn_a", ratios: tuple[int, ...] = (4, 16),
                   shortcut: bool = True, epochs: int = 8, methods: tuple[str, ...] = ("gradcam", "saliency",
                   "integrated_gradients", "guided_backprop"), faces_per_other: int = 2,
                   road_percentages: tuple[float, ...] = (0.3, 0.7), threads: int = 2, seeds: int = 3,
                   log: Any = print, command: str = "", resume: bool = False) -> dict[str, Any]:
    """Train and evaluate every condition with ``seeds`` training seeds (0, 1, …); write report.json, report.md
    and plots into ``out``. Intervals pool faces and seeds, so they cover the training's randomness too.

    ``resume``: keep the conditions an earlier, stopped run already wrote to ``out/report.json`` with the same
    settings (a 3-seed run takes most of an hour on 2 cores; a stop should not cost the finished conditions).
    Settings that differ start the run afresh, and the log says so."""
    import torch

    from app.evaluate.benchmark import BenchmarkSet, load_dataset_split
    from app.evaluate.scorecard import EvaluationOptions, evaluate_model
    from app.nets.registry import read_model_folder
    from app.nets.train import train_model

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    conditions: list[tuple[str, float, bool]] = [("balanced", 1.0, False)]
    conditions += [(f"rare_1to{r}", 1.0 / r, False) for r in ratios]
    if shortcut:
        conditions.append(("shortcut", 1.0, True))
    test = load_dataset_split(data, "test")
    chosen, seen = [], {}
    for face in test.faces:  # the rare class's every test face, a few of each other syndrome
        if face.label == rare_class or seen.get(face.label, 0) < faces_per_other:
            chosen.append(face)
            seen[face.label] = seen.get(face.label, 0) + 1
    benchmark = BenchmarkSet(spec={**test.spec, "selection": f"all {rare_class}, {faces_per_other} per other"},
                             faces=chosen, skipped=test.skipped)
    options = EvaluationOptions(road_percentages=road_percentages, sanity_faces=0, robustness_samples=0,
                                similarity_methods=(), ig_tolerance=0.0)
    data_sha256 = _manifest_digest(data)
    results: dict[str, Any] = _kept_conditions(out, [c[0] for c in conditions], log, {
        "rare_class": rare_class, "epochs": epochs, "methods": list(methods), "seeds": seeds, "threads": threads,
        "road_percentages": list(road_percentages), "n_eval_faces": len(benchmark.faces),
        "faces_per_other": faces_per_other, "data_sha256": data_sha256}) if resume else {}
    for name, fraction, cue in conditions:
        if name in results:
            continue
        started = time.perf_counter()
        log(f"[{name}] data")
        counts = derive_dataset(data, work / f"data-{name}", rare_class=rare_class, keep_fraction=fraction,
                                shortcut=cue)
        # the shortcut model is evaluated on its own (cued) test images: the base set's faces with the cue
        bench = load_dataset_split(work / f"data-{name}", "test") if cue else benchmark
        if cue:
            ids = {f.image_id for f in benchmark.faces}
            bench = BenchmarkSet(spec={**bench.spec, "selection": benchmark.spec["selection"]},
                                 faces=[f for f in bench.faces if f.image_id in ids], skipped=bench.skipped)
        cards, metrics_by_seed, train_seconds = [], [], 0.0
        for seed in range(seeds):
            log(f"[{name}] seed {seed}: training on {sum(counts.values())} images ({counts.get(rare_class)} of "
                f"{rare_class})")
            model_id = f"imb-{name}-s{seed}".replace("_", "-")
            report = train_model(work / f"data-{name}", work / model_id, model_id=model_id, epochs=epochs,
                                 seed=seed, threads=threads)
            train_seconds += report.train_seconds
            model = read_model_folder(report.model_dir)
            log(f"[{name}] seed {seed}: evaluating on {len(bench.faces)} faces")
            cards.append(evaluate_model(model.network, [label.id for label in model.labels], bench, list(methods),
                                        gradcam_layer=model.card.gradcam_layer, options=options))
            metrics_by_seed.append(report.metrics)
        card = cards[0]

        def mean_over_seeds(get: Any, runs: list[dict[str, Any]] = metrics_by_seed) -> float:
            return sum(get(m) for m in runs) / len(runs)

        per_class = {c: mean_over_seeds(lambda m, c=c: m["per_class"][c]["top1"])
                     for c in metrics_by_seed[0]["per_class"]}
        results[name] = {
            "train_counts": counts, "train_seconds": round(train_seconds, 1), "seeds": seeds,
            "seconds": round(time.perf_counter() - started, 1),
            "top1": mean_over_seeds(lambda m: m["top1"]), "softmax_top1": mean_over_seeds(lambda m: m["softmax_top1"]),
            "top1_by_seed": [m["top1"] for m in metrics_by_seed],
            "per_class_top1": per_class,
            "rare_top1_by_seed": [m["per_class"][rare_class]["top1"] for m in metrics_by_seed],
            "cue_faces": sum(1 for f in bench.faces if f.shortcut),
            "summary": _summarise(cards, rare_class),
            "context_occlusion": {k: sum(c["context_occlusion"][k]["mean"] for c in cards) / len(cards)
                                  for k in card["context_occlusion"]},
            "chance": card["chance"], "scorecard": card,
        }
        metrics = {"top1": results[name]["top1"]}
        log(f"[{name}] done in {results[name]['seconds']} s: top-1 {metrics['top1']:.3f}, "
            f"{rare_class} {results[name]['per_class_top1'][rare_class]:.3f}")
        _write_report(out, results, complete=len(results) == len(conditions), command=command, data=data,
                      rare_class=rare_class, epochs=epochs, methods=methods, road_percentages=road_percentages,
                      threads=threads, n_faces=len(benchmark.faces), seeds=seeds,
                      faces_per_other=faces_per_other, data_sha256=data_sha256)
    if len(results) == len(conditions):  # written again so that a fully resumed run is marked complete too
        _write_report(out, results, complete=True, command=command, data=data, rare_class=rare_class,
                      epochs=epochs, methods=methods, road_percentages=road_percentages, threads=threads,
                      n_faces=len(benchmark.faces), seeds=seeds, faces_per_other=faces_per_other,
                      data_sha256=data_sha256)
    shutil.rmtree(work, ignore_errors=True)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _manifest_digest(data: Path) -> str:
    """sha256 of the data set's manifest: a resumed run must use the same faces, and a path alone does not say
    so (a folder regenerated with another seed keeps its name)."""
    import hashlib

    return hashlib.sha256((Path(data) / "manifest.jsonl").read_bytes()).hexdigest()


def _kept_conditions(out: Path, names: list[str], log: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The finished conditions of an earlier run in ``out`` whose settings equal ``settings``, else nothing."""
    path = out / "report.json"
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    differ = [key for key, value in settings.items() if earlier.get(key) != value]
    if differ:
        log(f"[resume] {path} was made with other settings ({', '.join(differ)}): starting afresh")
        return {}
    kept = {name: earlier["conditions"][name] for name in names if name in earlier.get("conditions", {})}
    for name in kept:
        log(f"[{name}] kept from {path}")
    return kept


def _write_report(out: Path, results: dict[str, Any], *, complete: bool, command: str, data: Path,
                  rare_class: str, epochs: int, methods: tuple[str, ...], road_percentages: tuple[float, ...],
                  threads: int, n_faces: int, seeds: int = 1, faces_per_other: int | None = None,
                  data_sha256: str | None = None) -> None:
    """report.json and report.md after every condition, so a long run that is stopped keeps what it measured."""
    import torch

    from app.evaluate.report import write_imbalance_report

    experiment = {
        "question": "Do explanations for a rare syndrome, or for a shortcut-trained model, localise worse, and "
                    "can the metrics detect a shortcut?",
        "command": command, "data": str(data), "rare_class": rare_class, "epochs": epochs, "methods": list(methods),
        "road_percentages": list(road_percentages), "threads": threads, "n_eval_faces": n_faces,
        "torch": torch.__version__, "complete": complete, "conditions": results, "seeds": seeds,
        "faces_per_other": faces_per_other, "data_sha256": data_sha256,
    }
    _write_json(out / "report.json", experiment)
    write_imbalance_report(experiment, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a data set written by `gestaltlens synth`")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rare-class", default="syn_a")
    parser.add_argument("--ratios", default="4,16")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--methods", default="gradcam,saliency,integrated_gradients,guided_backprop")
    parser.add_argument("--faces-per-other", type=int, default=2)
    parser.add_argument("--road", default="0.3,0.7", help="ROAD removal fractions")
    parser.add_argument("--no-shortcut", action="store_true")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per condition")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GESTALTLENS_THREADS", "2")))
    parser.add_argument("--resume", action="store_true",
                        help="keep the conditions a stopped run with the same settings wrote to OUT/report.json")
    args = parser.parse_args(argv)
    run_experiment(args.data, args.out, rare_class=args.rare_class,
                   ratios=tuple(int(r) for r in args.ratios.split(",") if r),
                   shortcut=not args.no_shortcut, epochs=args.epochs,
                   seeds=args.seeds, methods=tuple(args.methods.split(",")),
                   faces_per_other=args.faces_per_other, threads=args.threads,
                   road_percentages=tuple(float(p) for p in args.road.split(",") if p),
                   log=lambda m: print(m, file=sys.stderr, flush=True), resume=args.resume,
                   command="python -m app.evaluate.imbalance " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
