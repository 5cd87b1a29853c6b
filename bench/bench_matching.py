"""Matching at scale (issue 22): exact cosine search over stored 512-d embeddings, and gallery build throughput.

    python bench/bench_matching.py [--sizes 10000,100000,1000000] [--queries 200] [--threads 2]
                                   [--build-photos 12] [--skip-build]

Search: N unit embeddings drawn around 2,000 seeded "syndrome" centres (so nearest neighbours are not a
tie of random noise), queries = fresh noisy copies of stored rows. Exact search is one matrix-vector
product and an argpartition for the top 10. Storage in float32, and in float16 read back in float32
chunks of 65,536 rows (half the memory; ``--f16-queries`` queries, it is the slower path); recall@10 of
the float16 ranking against the float32 one says whether float16 storage changes the ranking.
Per-query p50/p95 over ``--queries``, memory of the stored matrix, ratios measured in this run.
Gallery build: photos per minute through the real intake and encoding
(``app.nets.gallery_build.encode_sources``) on the demo model and a random-weight iResNet-50.
The load average is printed: the machine is shared and every number moves with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 512
CHUNK = 65_536
TOP = 10


def dataset(n: int, seed: int = 0, centres: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((centres, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        rows = centre[rng.integers(0, centres, stop - start)] + 0.8 * rng.standard_normal((stop - start, DIM),
                                                                                          dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def top_k32(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores = matrix @ query
    best = np.argpartition(-scores, TOP)[:TOP]
    return best[np.argsort(-scores[best])]


def top_k16(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores = np.empty(matrix.shape[0], dtype=np.float32)
    for start in range(0, matrix.shape[0], CHUNK):
        scores[start:start + CHUNK] = matrix[start:start + CHUNK].astype(np.float32) @ query
    best = np.argpartition(-scores, TOP)[:TOP]
    return best[np.argsort(-scores[best])]


def timed(fn, matrix: np.ndarray, queries: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    results, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(fn(matrix, query))
        seconds.append(time.perf_counter() - started)
    return results, np.array(seconds) * 1000.0


def search_bench(sizes: list[int], n_queries: int, f16_queries: int) -> None:
    print(f"{'rows':>9} {'storage':>8} {'MiB':>7} {'p50 ms':>8} {'p95 ms':>8} {'p95/f32':>8} {'recall@10 vs f32':>17}")
    for n in sizes:
        matrix = dataset(n)
        rng = np.random.default_rng(1)
        picks = rng.integers(0, n, n_queries)
        noisy = matrix[picks] + 0.3 * rng.standard_normal((n_queries, DIM), dtype=np.float32) / np.sqrt(DIM)
        queries = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
        exact, ms32 = timed(top_k32, matrix, queries)
        half = matrix.astype(np.float16)
        del matrix
        found, ms16 = timed(top_k16, half, queries[:f16_queries])
        recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / TOP for a, b in zip(exact, found, strict=False)])
        p95_32 = float(np.percentile(ms32, 95))
        print(f"{n:>9} {'float32':>8} {n * DIM * 4 / 2**20:>7.0f} {np.median(ms32):>8.1f} {p95_32:>8.1f} "
              f"{1.0:>8.2f} {1.0:>17.3f}")
        print(f"{n:>9} {'float16':>8} {half.nbytes / 2**20:>7.0f} {np.median(ms16):>8.1f} "
              f"{np.percentile(ms16, 95):>8.1f} {np.percentile(ms16, 95) / p95_32:>8.2f} {recall:>17.3f}")
        del half


def _random_r50_folder(root: Path) -> Path:
    import torch

    from app.nets.card import Architecture, Label, ModelCard, write_card, write_labels
    from app.nets.checkpoint import export_state_dict
    from app.nets.iresnet import build_network

    folder = root / "r50"
    folder.mkdir()
    torch.manual_seed(0)
    network = build_network("iresnet50", num_classes=2).eval()
    torch.save(export_state_dict(network, torch.float32), folder / "weights.pt")
    write_labels((Label(id="a", name="a"), Label(id="b", name="b")), folder / "labels.json")
    write_card(ModelCard(id="r50", version="0", architecture=Architecture(name="iresnet50", num_classes=2),
                         intended_use="bench", training_data="random", metrics={}, licence=""), folder)
    return folder


def build_bench(photos: int) -> None:
    from app.nets.card import Label
    from app.nets.gallery_build import PhotoSource, encode_sources
    from app.nets.registry import load_model, read_model_folder
    from app.settings import PROJECT_ROOT
    from app.synth.generate import generate_one

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sources = []
        for i in range(photos):
            path = root / f"p{i}.jpg"
            path.write_bytes(generate_one(seed=5, class_id=("syn_a", "syn_b", "syn_c")[i % 3], index=i).jpeg)
            sources.append(PhotoSource(path=path, image_id=path.name, label=Label(id="x", name="x"), subject_id=str(i)))
        models = {"demo (iResNet-18 x0.25)": load_model(PROJECT_ROOT / "models", "demo"),
                  "iResNet-50 (random weights)": read_model_folder(_random_r50_folder(root))}
        print(f"\n{'model':>28} {'photos':>7} {'s':>7} {'photos/min':>11} {'ratio':>7}")
        base = None
        for name, model in models.items():
            started = time.perf_counter()
            _, skipped = encode_sources(model, sources, progress=False)
            seconds = time.perf_counter() - started
            rate = 60.0 * photos / seconds
            base = base or rate
            print(f"{name:>28} {photos:>7} {seconds:>7.1f} {rate:>11.1f} {rate / base:>7.2f}"
                  + (f"  ({len(skipped)} skipped)" if skipped else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--f16-queries", type=int, default=20, help="queries for the (slower) float16 path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--build-photos", type=int, default=12)
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}, threads: {args.threads}")
    search_bench([int(x) for x in args.sizes.split(",")], args.queries, args.f16_queries)
    if not args.skip_build:
        build_bench(args.build_photos)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
