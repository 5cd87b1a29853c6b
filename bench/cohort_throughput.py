"""Cohort throughput: cases per minute one at a time against batched across cases, and the peak memory of each.

Called by bench/bench_explain.py (its last table); runnable alone:

    python bench/cohort_throughput.py [demo:6,iresnet50:2] [--threads N]

Per model and way of running: ``one at a time`` = one :meth:`Explainer.explain` per case (the explainer and its
folded inference copy built once and reused, as a worker does); ``batched`` = one
:func:`app.explain.cohort_batch.explain_cohort` call (IG steps, SmoothGrad samples and the gradient pass of several
cases in shared batches of the explainer's 16 rows, as the cohort job runs them, and occlusion windows of several cases
in shared batches of the tail; the other methods per case). Each way runs in a fresh process (spawned), so the peak
resident memory it reports (``VmHWM``) is its own; ``base`` is that process's resident memory after loading the
network and a warm-up pass, so peak - base is what the cohort run itself added. CPU seconds
(``time.process_time``) are shown beside wall seconds: on shared, loaded cores they are the steadier measure of
the work done (other processes add wall time, much less CPU time). The faces are synthetic, through
the real detection and alignment pipeline; targets are each face's top class.

On the demo model the whole default panel is run; on iResNet-50 the methods a cohort instrument batches
(:data:`app.explain.cohort_batch.BATCHED_METHODS`), so the table finishes in minutes on two loaded cores.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Rows per forward/backward of the batched way: None = the explainer's own batch (16), as the cohort job runs it.
COHORT_BATCH: int | None = None


def _status_mib(field: str) -> float:
    """A /proc/self/status memory field in MiB (VmRSS: resident now; VmHWM: the peak of this process's memory
    map, reset by exec, unlike ru_maxrss, which a spawned child inherits from the parent it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _run(name: str, crops: list[np.ndarray], methods: list[str], way: str, mode: str, threads: int,
         batch: int | None, queue: multiprocessing.Queue) -> None:
    import torch

    torch.set_num_threads(threads)
    from app.explain.cohort_batch import CohortItem, explain_cohort
    from app.explain.engine import Explainer
    from app.nets.preprocess import preprocess
    from bench.explain_networks import load_network

    network = load_network(name)
    explainer = Explainer(network)
    with torch.no_grad():
        targets = [int(network(preprocess(crop))[0].argmax()) for crop in crops]
    explainer.explain(crops[0], target=targets[0], methods=["saliency"])  # warm-up
    # Fast mode's plan is measured once per machine and network and kept in its file (app.explain.fast_plan);
    # a worker pays it on its first fast job only, so it is timed apart from the cohort, not inside it.
    plan_start = time.perf_counter()
    if mode == "fast":
        explainer.fast_plan()
    plan_seconds = time.perf_counter() - plan_start
    base = _status_mib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    if way == "batched":
        explain_cohort(explainer, [CohortItem(c, t) for c, t in zip(crops, targets, strict=True)],
                       methods=methods, mode=mode, batch_size=batch)
    else:
        for crop, target in zip(crops, targets, strict=True):
            explainer.explain(crop, target=target, methods=methods, mode=mode)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _status_mib("VmHWM")
    queue.put((seconds, cpu, base, peak, plan_seconds))


def measure(name: str, crops: list[np.ndarray], methods: list[str], way: str, mode: str,
            threads: int, batch: int | None = COHORT_BATCH) -> tuple[float, float, float, float, float]:
    """(wall seconds, CPU seconds, base RSS MiB, peak RSS MiB, fast-plan seconds before the run) of one cohort run
    in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(name, crops, methods, way, mode, threads, batch, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def cohort_table(specs: list[tuple[str, int]], threads: int) -> None:
    from app.explain.cohort_batch import BATCHED_METHODS
    from app.explain.registry import DEFAULT_PANEL
    from app.synth.generate import generate_one
    from app.vision.pipeline import process_photo

    print("\ncohort throughput (fresh process per row; peak = VmHWM, base = RSS after load + warm-up; fast rows: the "
          "plan is fetched before the clock starts, 'plan s' = its cost in that process: measured once per machine "
          "and network, then read from its file)")
    header = f"  {'model':<10} {'methods':<10} {'mode':<6} {'way':<14} {'cases':>5} {'wall s':>7} {'cases/min':>9} " \
             f"{'x':>6} {'CPU s':>7} {'cases/CPU-min':>13} {'x':>6} {'base MiB':>8} {'peak MiB':>8} {'plan s':>7}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, cases in specs:
        crops = [process_photo(generate_one(i, "syn_a", 100 + i).jpeg).aligned.crop for i in range(cases)]
        methods, label = (list(DEFAULT_PANEL), "panel") if name == "demo" else (list(BATCHED_METHODS), "batchable")
        for mode in ("exact", "fast"):
            first: tuple[float, float] | None = None
            for way in ("one at a time", "batched"):
                seconds, cpu, base, peak, plan_seconds = measure(name, crops, methods, way.split()[0], mode, threads)
                first = (seconds, cpu) if first is None else first
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                print(f"  {name:<10} {label:<10} {mode:<6} {way:<14} {cases:5d} {seconds:7.1f} "
                      f"{cases * 60 / seconds:9.2f} {first[0] / seconds:5.2f}x {cpu:7.1f} {cases * 60 / cpu:13.2f} "
                      f"{first[1] / cpu:5.2f}x {base:8.0f} {peak:8.0f} {plan_seconds:7.2f}   (load {load:.1f})",
                      flush=True)


def main() -> None:
    import torch

    args = [a for a in sys.argv[1:] if not a.startswith("--threads")]
    threads = torch.get_num_threads()
    for a in sys.argv[1:]:
        if a.startswith("--threads="):
            threads = int(a.split("=", 1)[1])
    spec = args[0] if args else "demo:6,iresnet50:2"
    cohort_table([(s.split(":")[0], int(s.split(":")[1])) for s in spec.split(",")], threads=threads)


if __name__ == "__main__":
    main()
