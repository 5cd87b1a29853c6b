"""Gaze metrics and comparisons on this CPU: how long one map's metrics take, and a whole results table.

    python bench/bench_gaze.py [--cases 40] [--participants 20] [--fixations 15] [--methods 10] [--repeat 3]

Synthetic data (seeded): smooth random 112x112 maps, fixations drawn around landmark positions. Prints the
time per call of each metric, of a density map, and of the full comparison the results page runs (every
method against every group and everyone, the ceiling per group, group against group), median of --repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from app.evaluate import gaze, gaze_maps


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--fixations", type=int, default=15)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    smap = gaussian_filter(rng.normal(size=(112, 112)), 5)
    fix = gaze.Fixations.of(rng.uniform(20, 90, size=(args.fixations * args.participants, 2)))
    others = gaze.Fixations.of(rng.uniform(0, 112, size=(2000, 2)))
    density = gaze_maps.density_map(fix, sigma=8.0)
    rows = [
        ("density map", lambda: gaze_maps.density_map(fix, sigma=8.0)),
        ("NSS", lambda: gaze.nss(smap, fix)),
        ("AUC-Judd", lambda: gaze.auc_judd(smap, fix)),
        ("AUC-Borji (100 splits)", lambda: gaze.auc_borji(smap, fix)),
        ("sAUC (2000 negatives)", lambda: gaze.auc_shuffled(smap, fix, others)),
        ("CC", lambda: gaze.cc(smap, density)),
        ("SIM", lambda: gaze.sim(smap, density)),
        ("KL", lambda: gaze.kl(smap, density)),
        ("IoU top 10%", lambda: gaze.top_iou(smap, density)),
        ("all eight", lambda: gaze.score_all(smap, density, fix, others)),
    ]
    print(f"one map, {len(fix)} fixations (median of {args.repeat * 10}):")
    print(f"{'call':<26}{'ms':>10}")
    for name, fn in rows:
        print(f"{name:<26}{timed(lambda fn=fn: [fn() for _ in range(10)], args.repeat) * 100:>10.2f}")

    groups = ["clinical_geneticist", "non_clinician"]
    cols: list[list] = [[], [], [], [], [], []]
    for p in range(args.participants):
        for c in range(args.cases):
            for _ in range(args.fixations):
                x, y = rng.normal([56, 60], 15)
                for col, value in zip(cols, (f"P{p}", groups[p % 2], f"c{c}", x, y, rng.uniform(100, 400)),
                                      strict=True):
                    col.append(value)
    table = gaze_maps.GazeTable(*cols, sigma={f"c{c}": 8.0 for c in range(args.cases)})
    maps = {f"m{m}": {f"c{c}": gaussian_filter(rng.normal(size=(112, 112)), 4) for c in range(args.cases)}
            for m in range(args.methods)}

    def everything() -> None:
        scores = gaze_maps.compare_methods(table, maps)
        for method in scores.values():
            for per_case in method.values():
                gaze_maps.pooled(per_case)
        for g in [None, *groups]:
            gaze_maps.pooled(gaze_maps.ceiling(table, group=g))
        gaze_maps.pooled(gaze_maps.group_vs_group(table, groups[0], groups[1]))

    seconds = timed(everything, max(1, args.repeat // 3))
    print(f"\nresults table: {args.cases} cases x {args.participants} participants x {args.fixations} fixations, "
          f"{args.methods} methods, 2 groups")
    print(f"{'total s':<26}{seconds:>10.2f}")


if __name__ == "__main__":
    main()
