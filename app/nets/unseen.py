"""The unseen-syndrome experiment (GestaltMatcher's central table, on our generator).

    python -m app.nets.unseen OUT [--left-out syn_e] [--per-class 60] [--epochs 12] [--new-faces 30] [--seed 0]

1. Generate a data set of every synthetic syndrome (``app.synth``, the real detector and aligner).
2. Train a demo-size model (iResNet-18 × 0.25) on every syndrome **but one**: the left-out syndrome is
   absent from the head and from the model's gallery.
3. Generate new patients of the left-out syndrome: 5 become "confirmed cases" in the living gallery (as
   clinicians sharing them for matching would add them), the others are new faces to rank.
4. Rank each new face with 1, 3 and 5 of those confirmed cases in the gallery (the same code path as a
   case's ranking: :func:`app.nets.predict.predict` with an extra gallery and the syndrome it adds), and
   new faces of the *seen* syndromes with the same living gallery. Top-1/5/10 with Wilson 95% intervals.

With 9 synthetic syndromes top-10 is always 1 (there are only 9 to rank); top-1 and top-5 carry the
result. Chance for top-1 is 1/9. Everything is deterministic from ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.nets.card import Label
from app.nets.gallery import build_gallery
from app.nets.predict import encode_query, predict
from app.nets.registry import LoadedModel, read_model_folder

K_CONFIRMED = (1, 3, 5)
TOPS = (1, 5, 10)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _leave_out(source: Path, target: Path, left_out: str) -> None:
    """A copy of the data set's index without one class (images are shared through a link)."""
    target.mkdir(parents=True, exist_ok=True)
    info = json.loads((source / "dataset.json").read_text())
    classes = [c for c in info["classes"] if c["id"] != left_out]
    index_of = {c["id"]: i for i, c in enumerate(classes)}
    info["classes"] = classes
    info["counts"] = {k: v for k, v in (info.get("counts") or {}).items() if k != left_out}
    (target / "dataset.json").write_text(json.dumps(info))
    with (source / "manifest.jsonl").open() as lines, (target / "manifest.jsonl").open("w") as out:
        for line in lines:
            entry = json.loads(line)
            if entry.get("label") == left_out:
                continue
            entry["label_index"] = index_of[entry["label"]]
            out.write(json.dumps(entry) + "\n")
    for sub in ("aligned", "images"):
        link = target / sub
        if not link.exists():
            link.symlink_to((source / sub).resolve(), target_is_directory=True)


def _crops(seed: int, class_id: str, indices: range) -> list[np.ndarray]:
    from app.synth.generate import generate_one
    from app.vision.errors import IntakeError
    from app.vision.pipeline import default_detector, process_photo

    crops = []
    for index in indices:
        try:
            crops.append(process_photo(generate_one(seed=seed, class_id=class_id, index=index).jpeg,
                                       detector=default_detector()).aligned.crop)
        except IntakeError:
            continue  # the detector missed it: it is not a face the app would rank
    return crops


@dataclass
class Tally:
    n: int = 0
    hits: dict[int, int] | None = None

    def add(self, rank: int | None) -> None:
        self.hits = self.hits or dict.fromkeys(TOPS, 0)
        self.n += 1
        for top in TOPS:
            self.hits[top] += int(rank is not None and rank <= top)

    def to_json(self) -> dict[str, Any]:
        hits = self.hits or dict.fromkeys(TOPS, 0)
        return {"n": self.n, **{f"top{t}": hits[t] / self.n if self.n else None for t in TOPS},
                **{f"top{t}_ci95": wilson(hits[t], self.n) for t in TOPS}}


def _rank_of(model: LoadedModel, crop: np.ndarray, syndrome: str, extra: Any,
             syndromes: tuple[Label, ...]) -> int | None:
    result = predict(model, crop, top_k=len(syndromes), extra=extra, syndromes=syndromes)
    return next((p.rank for p in result.ranked if p.syndrome_id == syndrome), None)


def run(out: Path, *, left_out: str = "syn_e", per_class: int = 60, epochs: int = 12, new_faces: int = 30,
        seed: int = 0, workers: int = 2) -> dict[str, Any]:
    from app.nets.train import train_model
    from app.synth.classes import get_class
    from app.synth.dataset import write_dataset

    started = time.perf_counter()
    out = Path(out)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    write_dataset(work / "all", seed=seed, count_per_class=per_class, workers=workers)
    _leave_out(work / "all", work / "seen", left_out)
    report = train_model(work / "seen", work / "model", model_id="model", epochs=epochs, seed=seed)
    model = read_model_folder(work / "model")
    seen_ids = [label.id for label in model.labels]

    case_seed = seed + 7919  # patients the training never saw
    confirmed = _crops(case_seed, left_out, range(0, max(K_CONFIRMED) + 2))[:max(K_CONFIRMED)]
    queries = _crops(case_seed, left_out, range(100, 100 + new_faces))
    confirmed_views = np.stack([encode_query(model, crop)[1] for crop in confirmed])
    unseen_label = Label(id=left_out, name=get_class(left_out).name)
    syndromes = (*model.syndromes, unseen_label)
    results: dict[str, Any] = {"unseen": {}, "seen": {}}
    for k in K_CONFIRMED:
        extra = build_gallery(confirmed_views[:k], [left_out] * k, [f"case{i}" for i in range(k)], syndromes,
                              what="confirmed cases", sources=["case"] * k)
        tally = Tally()
        for crop in queries:
            tally.add(_rank_of(model, crop, left_out, extra, syndromes))
        results["unseen"][f"k{k}"] = tally.to_json()
        seen_tally = Tally()
        for class_id in seen_ids:
            for crop in _crops(case_seed, class_id, range(100, 100 + max(3, new_faces // len(seen_ids)))):
                seen_tally.add(_rank_of(model, crop, class_id, extra, syndromes))
        results["seen"][f"k{k}"] = seen_tally.to_json()
    summary = {
        "command": (f"python -m app.nets.unseen {out} --left-out {left_out} --per-class {per_class} "
                    f"--epochs {epochs} --new-faces {new_faces} --seed {seed}"),
        "left_out": left_out, "seen_syndromes": seen_ids, "per_class": per_class, "epochs": epochs,
        "seed": seed, "confirmed_cases": len(confirmed), "new_faces_unseen": len(queries),
        "model_metrics": {k: report.metrics.get(k) for k in ("top1", "top5", "n")},
        "chance_top1": 1 / len(syndromes), "results": results,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": list(__import__("os").getloadavg()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "unseen.json").write_text(json.dumps(summary, indent=2))
    _markdown(out, summary)
    _plot(out, summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _markdown(out: Path, s: dict[str, Any]) -> None:
    lines = [f"# Unseen-syndrome experiment ({s['left_out']} left out of training)", "",
             f"Command: `{s['command']}`  ", f"Run time {s['seconds']} s, load average {s['load_average']}.", "",
             f"Trained on {len(s['seen_syndromes'])} syndromes ({s['per_class']} photos each, {s['epochs']} epochs); "
             f"{s['confirmed_cases']} new patients of {s['left_out']} are confirmed cases in the living gallery, "
             f"{s['new_faces_unseen']} more are ranked. Chance top-1: {s['chance_top1']:.3f}. "
             "Top-10 is 1 by construction (9 syndromes).", "",
             "| faces ranked | confirmed cases in gallery | n | top-1 (95% CI) | top-5 (95% CI) | top-10 |",
             "|---|---|---|---|---|---|"]
    for group in ("unseen", "seen"):
        for k in K_CONFIRMED:
            r = s["results"][group][f"k{k}"]
            ci1, ci5 = r["top1_ci95"], r["top5_ci95"]
            lines.append(f"| {group} syndrome{'s' if group == 'seen' else ''} | {k} | {r['n']} | "
                         f"{r['top1']:.2f} ({ci1[0]:.2f}–{ci1[1]:.2f}) | {r['top5']:.2f} ({ci5[0]:.2f}–{ci5[1]:.2f}) | "
                         f"{r['top10']:.2f} |")
    lines += ["", "![top-1 by confirmed cases](unseen.png)", ""]
    (out / "unseen.md").write_text("\n".join(lines))


def _plot(out: Path, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.6, 3.4), dpi=100)
    for offset, group in ((-0.1, "unseen"), (0.1, "seen")):
        values = [s["results"][group][f"k{k}"] for k in K_CONFIRMED]
        y = [v["top1"] for v in values]
        err = [[v["top1"] - v["top1_ci95"][0] for v in values], [v["top1_ci95"][1] - v["top1"] for v in values]]
        axes.errorbar([k + offset for k in K_CONFIRMED], y, yerr=err, fmt="o-", capsize=3, label=f"{group} syndrome(s)")
    axes.axhline(s["chance_top1"], color="grey", linestyle=":", label="chance")
    axes.set_xticks(K_CONFIRMED)
    axes.set_xlabel(f"confirmed cases of {s['left_out']} in the gallery")
    axes.set_ylabel("top-1")
    axes.set_ylim(0, 1.05)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "unseen.png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--left-out", default="syn_e")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--new-faces", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    summary = run(args.out, left_out=args.left_out, per_class=args.per_class, epochs=args.epochs,
                  new_faces=args.new_faces, seed=args.seed, workers=args.workers)
    print(json.dumps(summary["results"], indent=2))


if __name__ == "__main__":
    main()
