"""Matching at scale (issue 22): nearest-neighbour search over stored 512-d embeddings, and gallery build throughput.

    python bench/bench_matching.py [--sizes 10000,100000,1000000] [--queries 200] [--threads 2]
                                   [--exact-budget-s 150] [--hnsw-up-to 100000] [--f16-queries 0]
                                   [--build-photos 12] [--skip-build]

Search: N unit embeddings drawn around 2,000 seeded "syndrome" centres (so nearest neighbours are not a
tie of random noise). Three query sets of ``--queries`` each: **copies** (a stored row plus a little noise:
the same patient photographed again), **fresh** (a new draw around a random centre, with the spread of
the stored rows: a new patient with a known syndrome) and **random** (a random direction, far from every
cluster: a face unlike the gallery, the hardest case for a cell-based index; reported apart). Timings are
per query, one query at a time (as the app ranks), over copies + fresh.

* **exact float32**: one matrix-vector product and an argpartition for the top 10 (``top_k32``); timed
  until all queries or ``--exact-budget-s`` seconds are spent (at least 20 queries; the count is printed).
* **IVF (product)**: :class:`app.nets.search.NearestIndex` forced onto its faiss path at every size (the
  app itself uses it only from ``APPROXIMATE_FROM`` rows; the ``app`` column says which path the app
  takes at that size): build time (k-means training and adding), memory, p50/p95, recall@10 against the
  exact top 10 of every query (computed with the exact index in batches).
* **HNSW** (``--hnsw-up-to``, the alternative that was measured and not chosen): faiss ``IndexHNSWFlat``,
  M=32, efConstruction=40, efSearch=128.
* **float16** (``--f16-queries``, off by default): the stored matrix in float16, read back in float32 chunks.

Memory: the index's own bytes (rows, centroids, ids); for HNSW the growth of the process' resident set
while it is built (meaningless for a small index, which fits in memory the process had already freed).
The CPU model and the load average are printed before and after each size: the machine is shared and
every absolute number moves with the load; ratios are measured in one run.
Gallery build: photos per minute through the real intake and encoding
(``app.nets.gallery_build.encode_sources``) on the demo model and a random-weight iResNet-50.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.machine import cpu_name

DIM = 512
CHUNK = 65_536
TOP = 10
CENTRES = 2000


def centres(seed: int = 0, count: int = CENTRES) -> np.ndarray:
    """The centres ``dataset`` draws around (its generator's first draw)."""
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def dataset(n: int, seed: int = 0, count: int = CENTRES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((count, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        rows = centre[rng.integers(0, count, stop - start)] + 0.8 * rng.standard_normal((stop - start, DIM),
                                                                                          dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def query_sets(matrix: np.ndarray, n_queries: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, matrix.shape[0], n_queries)
    copies = matrix[picks] + 0.3 * rng.standard_normal((n_queries, DIM), dtype=np.float32) / np.sqrt(DIM)
    fresh = centres()[rng.integers(0, CENTRES, n_queries)] + 0.8 * rng.standard_normal((n_queries, DIM),
                                                                                        dtype=np.float32)
    far = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    return {"copies": _unit(copies), "fresh": _unit(fresh), "random": _unit(far)}


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


def timed(fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, budget_s: float = float("inf"),
          at_least: int = 20) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-query results and milliseconds, stopping once ``budget_s`` is spent (after ``at_least`` queries)."""
    results, seconds = [], []
    began = time.perf_counter()
    for query in queries:
        started = time.perf_counter()
        results.append(fn(query))
        seconds.append(time.perf_counter() - started)
        if len(seconds) >= at_least and time.perf_counter() - began > budget_s:
            break
    return results, np.array(seconds) * 1000.0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / TOP for a, b in zip(found, truth, strict=True)]))


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


HEADER = (f"{'rows':>9} {'method':>14} {'app':>6} {'build s':>8} {'MiB':>7} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p95/exact':>9} {'timed':>6} {'r@10 copies':>11} {'r@10 fresh':>10} {'r@10 random':>11}")


def _row(n: int, method: str, app_path: str, build: float | None, mib: float, ms: np.ndarray, exact_p95: float,
         recalls: dict[str, float] | None) -> str:
    p95 = float(np.percentile(ms, 95))
    r = recalls or {}
    cells = [f"{r[k]:.4f}" if k in r else "exact" for k in ("copies", "fresh", "random")]
    return (f"{n:>9} {method:>14} {app_path:>6} {'-' if build is None else f'{build:.1f}':>8} {mib:>7.0f} "
            f"{np.median(ms):>8.2f} {p95:>8.2f} {p95 / exact_p95:>9.3f} {len(ms):>6} {cells[0]:>11} {cells[1]:>10} "
            f"{cells[2]:>11}")


def search_bench(sizes: list[int], n_queries: int, exact_budget_s: float, hnsw_up_to: int, f16_queries: int,
                 threads: int) -> None:
    import faiss

    from app.nets.search import APPROXIMATE_FROM, NPROBE, NearestIndex, ivf_cells

    faiss.omp_set_num_threads(threads)
    print(f"IVF: nlist = ivf_cells(n) (about 2·sqrt(n)), nprobe = {NPROBE}; the app goes approximate from "
          f"{APPROXIMATE_FROM:,} rows; faiss {faiss.__version__}")
    print(HEADER)
    for n in sizes:
        print(f"# {n:,} rows — {load()}", flush=True)
        matrix = dataset(n)
        sets = query_sets(matrix, n_queries)
        timed_queries = np.concatenate([sets["copies"], sets["fresh"]])
        exact = NearestIndex(DIM, approximate_from=None)
        exact.add(matrix)
        truth = {kind: exact.search(q, TOP)[1] for kind, q in sets.items()}
        app_path = "exact" if n < APPROXIMATE_FROM else "IVF"

        found, ms = timed(lambda q, m=matrix: top_k32(m, q), timed_queries, exact_budget_s)
        exact_p95 = float(np.percentile(ms, 95))
        assert recall(np.array(found), np.concatenate([truth["copies"], truth["fresh"]])[:len(found)]) == 1.0
        print(_row(n, "exact float32", "exact" if app_path == "exact" else "", None, matrix.nbytes / 2**20, ms,
                   exact_p95, None), flush=True)

        started = time.perf_counter()
        ivf = NearestIndex(DIM, approximate_from=1)
        ivf.add(matrix)
        build = time.perf_counter() - started
        _, ms = timed(lambda q, index=ivf: index.search(q[None], TOP)[1][0], timed_queries)
        recalls = {kind: recall(ivf.search(q, TOP)[1], truth[kind]) for kind, q in sets.items()}
        print(_row(n, f"IVF{ivf_cells(n)},p{NPROBE}", "IVF" if app_path == "IVF" else "", build, ivf.nbytes / 2**20,
                   ms, exact_p95, recalls), flush=True)
        del ivf

        if n <= hnsw_up_to:
            before = resident_mib()
            started = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 40
            hnsw.add(matrix)
            build = time.perf_counter() - started
            hnsw.hnsw.efSearch = 128
            _, ms = timed(lambda q, index=hnsw: index.search(q[None], TOP)[1][0], timed_queries)
            recalls = {kind: recall(hnsw.search(q, TOP)[1], truth[kind]) for kind, q in sets.items()}
            print(_row(n, "HNSW32,ef128", "", build, resident_mib() - before, ms, exact_p95, recalls), flush=True)
            del hnsw

        if f16_queries:
            half = matrix.astype(np.float16)
            found, ms = timed(lambda q, m=half: top_k16(m, q), timed_queries[:f16_queries])
            r = recall(np.array(found), np.concatenate([truth["copies"], truth["fresh"]])[:len(found)])
            print(_row(n, "exact float16", "", None, half.nbytes / 2**20, ms, exact_p95,
                       {"copies": r, "fresh": r}), flush=True)
            del half
        del matrix, exact
    print(f"# after — {load()}")


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
    parser.add_argument("--queries", type=int, default=200, help="queries per set (copies, fresh, random)")
    parser.add_argument("--exact-budget-s", type=float, default=150.0,
                        help="stop timing exact search after this many seconds per size (at least 20 queries)")
    parser.add_argument("--hnsw-up-to", type=int, default=100_000, help="also measure HNSW up to this many rows")
    parser.add_argument("--f16-queries", type=int, default=0, help="queries for the (slower) float16 path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--build-photos", type=int, default=12)
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  CPU: {cpu_name()}, cores: {os.cpu_count()}, "
          f"threads: {args.threads}, numpy {np.__version__}")
    print(f"before: {load()}")
    search_bench([int(x) for x in args.sizes.split(",")], args.queries, args.exact_budget_s, args.hnsw_up_to,
                 args.f16_queries, args.threads)
    if not args.skip_build:
        build_bench(args.build_photos)
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
