"""The unseen-syndrome experiment (GestaltMatcher's central table, on our generator).

    python -m app.nets.unseen OUT [--left-out syn_e] [--per-class 60] [--epochs 12] [--new-faces 30]
                                  [--seen-faces 10] [--draws 10] [--seed 0] [--workers 2] [--threads 2]

1. Generate a data set of every synthetic syndrome (``app.synth``, the real detector and aligner).
2. Train a demo-size model (iResNet-18 × 0.25) on every syndrome **but one**: the left-out syndrome is
   absent from the head and from the model's gallery.
3. Generate new patients of the left-out syndrome: 5 become "confirmed cases" in the living gallery (as
   clinicians sharing them for matching would add them), the others are new faces to rank.
4. Rank each new face with 1, 3 and 5 of those confirmed cases in the gallery (the same code path as a
   case's ranking: :func:`app.nets.predict.predict` with an extra gallery and the syndrome it adds), and
   new faces of the *seen* syndromes (``--seen-faces`` per syndrome, the same faces for every k) with the
   same living gallery. Top-1/5/10 with Wilson 95% intervals; unseen − seen top-1 with Newcombe's interval.
5. A size-matched control: every syndrome known from k faces only (the seen ones' drawn at random from the
   model's gallery, ``--draws`` times), to tell what the embedding knows about the unseen syndrome apart
   from the advantage a syndrome with many gallery faces has in a nearest-face ranking.

With 9 synthetic syndromes top-10 is always 1 (there are only 9 to rank); top-1 and top-5 carry the
result. Chance is top/9. Everything but the timings is deterministic from ``--seed``. OUT receives
``unseen.md``, ``unseen.json`` (every number of the report), ``unseen.png`` and ``unseen.svg``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
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


def newcombe(hits_a: int, n_a: int, hits_b: int, n_b: int) -> tuple[float, float]:
    """95% interval of p_a − p_b for two independent samples (Newcombe's hybrid score, from Wilson's)."""
    p_a, p_b = hits_a / n_a, hits_b / n_b
    (l_a, u_a), (l_b, u_b) = wilson(hits_a, n_a), wilson(hits_b, n_b)
    d = p_a - p_b
    return (max(-1.0, d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)),
            min(1.0, d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)))


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
    ranks: list[int | None] = field(default_factory=list)

    def add(self, rank: int | None) -> None:
        self.ranks.append(rank)

    def hits(self, top: int) -> int:
        return sum(rank is not None and rank <= top for rank in self.ranks)

    def to_json(self) -> dict[str, Any]:
        n = len(self.ranks)
        ranked = np.array([rank for rank in self.ranks if rank is not None], dtype=np.float64)
        mean = float(ranked.mean()) if ranked.size else None
        return {"n": n, **{f"top{t}": self.hits(t) / n if n else None for t in TOPS},
                **{f"top{t}_hits": self.hits(t) for t in TOPS},
                **{f"top{t}_ci95": wilson(self.hits(t), n) for t in TOPS},
                "mean_rank": mean,
                "mean_rank_ci95": _bootstrap(ranked, np.random.default_rng(n)) if ranked.size else None,
                "ranks": self.ranks}


def _bootstrap(per_query: np.ndarray, rng: np.random.Generator, resamples: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the mean over queries (each query's value already averaged over draws)."""
    means = per_query[rng.integers(0, len(per_query), size=(resamples, len(per_query)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def _size_matched(model: LoadedModel, faces: dict[str, list[tuple[str, np.ndarray]]], confirmed: np.ndarray,
                  left_out: str, syndromes: tuple[Label, ...], k: int, draws: int, seed: int) -> dict[str, Any]:
    """The control: every syndrome known from k faces only. The seen syndromes' k faces are drawn at random
    from the model's gallery (``draws`` times), the unseen one's are its k confirmed cases; the same
    ranking call, with the drawn faces as the only gallery. Separates what the embedding knows about the
    unseen syndrome from the advantage of nearest-of-many over nearest-of-k."""
    gallery = model.gallery
    if gallery is None:
        raise ValueError("the size-matched control draws from the model's gallery, and this model has none")
    bare, stack = dataclasses.replace(model, gallery=None), gallery.view_stack()
    rng = np.random.default_rng(seed + k)
    ranks = {group: np.zeros((len(items), draws)) for group, items in faces.items()}
    for draw in range(draws):
        rows = np.concatenate([rng.choice(np.flatnonzero(gallery.label_indices == c),
                                          min(k, int((gallery.label_indices == c).sum())), replace=False)
                               for c in range(len(model.syndromes))])
        extra = build_gallery(np.concatenate([stack[rows], confirmed[:k]]),
                              [*gallery.labels[rows].tolist(), *[left_out] * k],
                              [*gallery.image_ids[rows].tolist(), *[f"case{i}" for i in range(k)]], syndromes)
        for group, items in faces.items():
            for i, (class_id, crop) in enumerate(items):
                ranks[group][i, draw] = _rank_of(bare, crop, class_id, extra, syndromes) or len(syndromes)
    result = {}
    for group, r in ranks.items():
        per_top = {t: (r <= t).mean(axis=1) for t in TOPS}
        result[group] = {"n": len(r), "draws": draws, **{f"top{t}": float(v.mean()) for t, v in per_top.items()},
                         **{f"top{t}_ci95": _bootstrap(v, rng) for t, v in per_top.items()},
                         "mean_rank": float(r.mean()), "mean_rank_ci95": _bootstrap(r.mean(axis=1), rng)}
    return result


def _rank_of(model: LoadedModel, crop: np.ndarray, syndrome: str, extra: Any,
             syndromes: tuple[Label, ...]) -> int | None:
    result = predict(model, crop, top_k=len(syndromes), extra=extra, syndromes=syndromes)
    return next((p.rank for p in result.ranked if p.syndrome_id == syndrome), None)


def machine() -> dict[str, Any]:
    """Where the run happened: the CPU's model, cores, load, interpreter and torch."""
    import torch

    from app.machine import cpu_id, cpu_name

    git = shutil.which("git")
    commit, dirty = None, None
    if git is not None:
        try:
            commit = subprocess.run([git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,  # noqa: S603
                                    timeout=5, check=True).stdout.strip()
            dirty = bool(subprocess.run([git, "status", "--porcelain", "--", "app"],  # noqa: S603
                                        capture_output=True, text=True, timeout=5).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            commit, dirty = None, None
    return {"cpu": cpu_name(), "cpu_id": cpu_id(), "cpus": len(os.sched_getaffinity(0)),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "git_commit": commit, "app_tree_dirty": dirty}


def run(out: Path, *, left_out: str = "syn_e", per_class: int = 60, epochs: int = 12, new_faces: int = 30,
        seen_faces: int = 10, draws: int = 10, seed: int = 0, workers: int = 2, threads: int = 2,
        command: str | None = None, log: Any = None) -> dict[str, Any]:
    from app.nets.train import train_model
    from app.nets.unseen_report import write_markdown, write_plots
    from app.synth.classes import get_class
    from app.synth.dataset import write_dataset

    def note(message: str) -> None:
        if log is not None:
            print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=log, flush=True)

    started = time.perf_counter()
    at_start = machine()
    phases: dict[str, float] = {}
    out = Path(out)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    note(f"generating {per_class} photos for each syndrome")
    write_dataset(work / "all", seed=seed, count_per_class=per_class, workers=workers)
    phases["generate_s"] = time.perf_counter() - started
    _leave_out(work / "all", work / "seen", left_out)
    note(f"training without {left_out} ({epochs} epochs)")
    report = train_model(work / "seen", work / "model", model_id="model", epochs=epochs, seed=seed,
                         threads=threads)
    phases["train_s"] = time.perf_counter() - started - phases["generate_s"]
    model = read_model_folder(work / "model")
    seen_ids = [label.id for label in model.labels]

    note("generating and ranking new patients")
    case_seed = seed + 7919  # patients the training never saw
    confirmed = _crops(case_seed, left_out, range(0, max(K_CONFIRMED) + 2))[:max(K_CONFIRMED)]
    queries = _crops(case_seed, left_out, range(100, 100 + new_faces))
    seen_queries = [(class_id, crop) for class_id in seen_ids
                    for crop in _crops(case_seed, class_id, range(100, 100 + seen_faces))]
    confirmed_views = np.stack([encode_query(model, crop)[1] for crop in confirmed])
    syndromes = (*model.syndromes, Label(id=left_out, name=get_class(left_out).name))
    results: dict[str, Any] = {"unseen": {}, "seen": {}, "unseen_minus_seen_top1": {}, "size_matched": {}}
    for k in K_CONFIRMED:
        extra = build_gallery(confirmed_views[:k], [left_out] * k, [f"case{i}" for i in range(k)], syndromes,
                              what="confirmed cases", sources=["case"] * k)
        unseen, seen = Tally(), Tally()
        for crop in queries:
            unseen.add(_rank_of(model, crop, left_out, extra, syndromes))
        for class_id, crop in seen_queries:
            seen.add(_rank_of(model, crop, class_id, extra, syndromes))
        results["unseen"][f"k{k}"], results["seen"][f"k{k}"] = unseen.to_json(), seen.to_json()
        difference = unseen.hits(1) / len(unseen.ranks) - seen.hits(1) / len(seen.ranks)
        results["unseen_minus_seen_top1"][f"k{k}"] = {
            "difference": difference, "ci95": newcombe(unseen.hits(1), len(unseen.ranks), seen.hits(1),
                                                       len(seen.ranks))}
        results["size_matched"][f"k{k}"] = _size_matched(
            model, {"unseen": [(left_out, crop) for crop in queries], "seen": seen_queries}, confirmed_views,
            left_out, syndromes, k, draws, seed)
        note(f"k={k}: unseen top-1 {unseen.hits(1)}/{len(unseen.ranks)}, seen {seen.hits(1)}/{len(seen.ranks)}")
    phases["rank_s"] = time.perf_counter() - started - phases["generate_s"] - phases["train_s"]
    options = (f"{out} --left-out {left_out} --per-class {per_class} --epochs {epochs} --new-faces {new_faces} "
               f"--seen-faces {seen_faces} --draws {draws} --seed {seed} --workers {workers} --threads {threads}")
    summary = {
        "command": command or f"python -m app.nets.unseen {options}",
        "every_option": f"python -m app.nets.unseen {options}",
        "left_out": left_out, "left_out_name": get_class(left_out).name, "seen_syndromes": seen_ids,
        "per_class": per_class, "epochs": epochs, "seed": seed, "case_seed": case_seed,
        "confirmed_cases": len(confirmed), "new_faces_unseen": len(queries), "seen_faces_per_syndrome": seen_faces,
        "size_matched_draws": draws,
        "new_faces_seen": len(seen_queries), "syndromes_ranked": len(syndromes),
        "model_metrics": {k: report.metrics.get(k) for k in ("top1", "top5", "softmax_top1", "n")},
        "n_train": report.n_train, "n_test": report.n_test,
        "chance": {**{f"top{t}": min(1.0, t / len(syndromes)) for t in TOPS},
                   "mean_rank": (len(syndromes) + 1) / 2},
        "chance_top1": 1 / len(syndromes), "results": results,
        "seconds": round(time.perf_counter() - started, 1), "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "machine": {**{k: v for k, v in at_start.items() if k != "load_average"},
                    "load_average_start": at_start["load_average"],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "unseen.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_plots(out, summary)
    write_markdown(out, summary)
    shutil.rmtree(work, ignore_errors=True)
    note(f"wrote {out}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--left-out", default="syn_e")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--new-faces", type=int, default=30)
    parser.add_argument("--seen-faces", type=int, default=10, help="new faces per seen syndrome")
    parser.add_argument("--draws", type=int, default=10, help="random draws of the size-matched control")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes generating the data set")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while training")
    args = parser.parse_args()
    environment = " ".join(f"{name}={os.environ[name]}" for name in ("OMP_NUM_THREADS",) if name in os.environ)
    command = f"{environment} python -m app.nets.unseen {shlex.join(sys.argv[1:])}".strip()
    summary = run(args.out, left_out=args.left_out, per_class=args.per_class, epochs=args.epochs,
                  new_faces=args.new_faces, seen_faces=args.seen_faces, draws=args.draws, seed=args.seed,
                  workers=args.workers, threads=args.threads, command=command, log=sys.stderr)
    print(json.dumps({g: {k: {t: v[t] for t in ("n", "top1", "top5", "top10")} for k, v in r.items()}
                      for g, r in summary["results"].items() if g in ("unseen", "seen")}, indent=2))


if __name__ == "__main__":
    main()
