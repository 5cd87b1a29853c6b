"""Forward time and size of the iResNet variants on this CPU, plus the demo network's training step.

    python bench/bench_nets.py [--threads N] [--repeats N]

Forward times are per image, median over ``--repeats`` timed runs after one warm-up, under
``torch.inference_mode()`` with the network in eval mode (how prediction runs), at batch 1 (one upload)
and batch 32 (gallery building). The training step is the trainer's own step for the demo network
(augmentation, forward, backward, AdamW) at batch 32 and 64; per-epoch time ≈ step time per image x images.
Everything is measured in one process with the same thread count, so the rows are comparable. torch's
OpenMP threads spin while waiting, so another busy process on the same cores can slow a forward pass by
two orders of magnitude: the load average is printed so a reader can tell a contaminated run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.nets.augment import AugmentConfig
from app.nets.iresnet import IResNet, build_network
from app.nets.train import make_optimizer, prepare_for_training, training_step

VARIANTS: tuple[tuple[str, float], ...] = (("iresnet18", 0.25), ("iresnet50", 1.0), ("iresnet100", 1.0))
NUM_CLASSES = 10


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: allocator, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_ms_per_image(network: IResNet, batch: int, repeats: int) -> float:
    x = torch.randn(batch, 3, 112, 112)

    def run() -> None:
        with torch.inference_mode():
            network(x)

    return median_seconds(run, repeats) * 1000.0 / batch


def train_step_ms_per_image(network: IResNet, batch: int, repeats: int) -> float:
    """The trainer's own step (app.nets.train.training_step) on random uint8 crops."""
    prepare_for_training(network)
    optimizer = make_optimizer(network, lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    seconds = median_seconds(lambda: training_step(network, optimizer, x, y, generator, AugmentConfig(), 0.1), repeats)
    network.eval()
    return seconds * 1000.0 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the trainer's default is 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per cell (batch 1 uses 4N, batch 32 max(2, N//2))")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, {NUM_CLASSES}-class head, input 112x112, "
          f"{os.cpu_count()} CPUs, load average {load:.2f} at start (other processes inflate the times)\n")
    header = f"{'network':<18} {'params (backbone)':>18} {'params (total)':>15} {'b=1 ms/img':>11} {'b=32 ms/img':>12}"
    print(header)
    print("-" * len(header))
    demo = None
    for name, width in VARIANTS:
        network = build_network(name, num_classes=NUM_CLASSES, width=width).eval()
        total = sum(p.numel() for p in network.parameters())
        backbone = total - sum(p.numel() for p in network.head.parameters())
        b1 = forward_ms_per_image(network, 1, 4 * args.repeats)
        b32 = forward_ms_per_image(network, 32, max(2, args.repeats // 2))
        label = f"{name}@{width:g}"
        print(f"{label:<18} {backbone:>18,} {total:>15,} {b1:>11.1f} {b32:>12.1f}", flush=True)
        if demo is None:
            demo = network
    assert demo is not None
    name, width = VARIANTS[0]
    print(f"\ntraining step of {name}@{width:g} (augment + forward + backward + AdamW, channels-last):")
    for batch in (32, 64):
        step = train_step_ms_per_image(demo, batch, max(3, args.repeats))
        print(f"  batch {batch:>2}: {step:5.1f} ms/img -> about {step * 2000 / 1000:.0f} s per epoch of 2000 images",
              flush=True)


if __name__ == "__main__":
    main()
