"""Detection rate, landmark error and speed of the synthetic face generator, through the real pipeline.

    python bench/bench_synth.py [--seeds 0,1,2] [--count 20] [--workers 2] [--sheet /tmp/synth_sheet.png]
    python bench/bench_synth.py --learnability DATASET_DIR [--epochs 45]

For each seed a balanced data set (``--count`` images per class) is written with ``write_dataset`` into a
temporary folder (or under ``--out``), timed end to end (render, JPEG, detect, roll-correct, align, write
files). The table gives, per class, how many photos YuNet found exactly one face in, and how far the
detected landmarks (after roll correction) are from the ground truth: the worst of the five landmarks, in
photo pixels and as a fraction of the true inter-ocular distance. ``--sheet`` saves a contact sheet of
aligned crops (one row per class) with the ground-truth mask outlined in red.

``--learnability`` instead trains a small CNN from scratch (PyTorch, CPU) on the train split of an existing
data set's aligned crops and prints test top-1 and the confusions: the classes are meant to be learnable
(>= ~90% with a few hundred images per class) but not trivially so (misses are low-severity patients
taken for unaffected).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.synth.classes import CLASS_IDS
from app.synth.dataset import read_manifest, write_dataset


def contact_sheet(folder: Path, per_class: int, path: Path) -> None:
    """Aligned crops, one row per class, ground-truth mask outlined; written as PNG to ``path``."""
    records = read_manifest(folder)
    rows = []
    for class_id in CLASS_IDS:
        tiles = []
        for record in [r for r in records if r["label"] == class_id and r["detected"]][:per_class]:
            crop = np.array(Image.open(folder / record["aligned"]))
            mask = np.array(Image.open(folder / record["aligned_mask"]))
            edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) > 0
            outlined = crop.copy()
            outlined[edge] = (255, 40, 40)
            tiles.append(np.vstack([crop, outlined]))
        while len(tiles) < per_class:
            tiles.append(np.zeros((224, 112, 3), np.uint8))
        row = np.hstack(tiles)
        label = np.full((224, 90, 3), 255, np.uint8)
        cv2.putText(label, class_id, (4, 116), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack([label, row]))
    Image.fromarray(np.vstack(rows)).save(path)


def learnability(folder: Path, epochs: int) -> None:
    """Train a ~0.4 M-parameter CNN on the aligned crops and report test top-1 (see the module docstring)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    records = [r for r in read_manifest(folder) if r["detected"]]

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [r for r in records if r["split"] == split]
        images = np.stack([np.asarray(Image.open(folder / r["aligned"])) for r in chosen])
        x = torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x, torch.tensor([int(r["label_index"]) for r in chosen])

    x_train, y_train = load("train")
    x_test, y_test = load("test")

    def block(c_in: int, c_out: int, stride: int = 1, k: int = 3) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    net = nn.Sequential(
        block(3, 32, 2, 5),
        block(32, 48),
        nn.MaxPool2d(2),
        block(48, 96),
        nn.MaxPool2d(2),
        block(96, 128),
        block(128, 128),
        nn.MaxPool2d(2),
        block(128, 192),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(192, len(CLASS_IDS)),
    )
    batch = 48
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=5e-4)
    steps = epochs * -(-len(x_train) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps, pct_start=0.2)
    print(f"learnability: {len(x_train)} train / {len(x_test)} test aligned crops, {epochs} epochs")

    def predict() -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            return torch.cat([net(x_test[i : i + 128]).argmax(1) for i in range(0, len(x_test), 128)])

    for epoch in range(epochs):
        net.train()
        for chosen in torch.randperm(len(x_train)).split(batch):
            x = x_train[chosen].clone()
            flip = torch.rand(len(x)) < 0.5  # every feature is left-right symmetric
            x[flip] = x[flip].flip(3)
            dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))  # alignment jitter
            x = torch.roll(x, (dy, dx), (2, 3))
            loss = F.cross_entropy(net(x), y_train[chosen])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            accuracy = float((predict() == y_test).float().mean())
            print(f"  epoch {epoch + 1:3d}  last batch loss {loss.item():.3f}  test top-1 {accuracy:.3f}")
    predicted = predict()
    print(f"test top-1: {float((predicted == y_test).float().mean()):.3f}")
    for index, class_id in enumerate(CLASS_IDS):
        mine = y_test == index
        wrong = predicted[mine][predicted[mine] != index]
        confusions = {CLASS_IDS[int(c)]: int((wrong == c).sum()) for c in wrong.unique()}
        print(f"  {class_id:<12}{int((predicted[mine] == index).sum()):>4}/{int(mine.sum()):<4} {confusions or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated global seeds")
    parser.add_argument("--count", type=int, default=20, help="images per class and seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the data sets here (default: a temp dir)")
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG of the first seed")
    parser.add_argument("--sheet-count", type=int, default=8, help="crops per class on the contact sheet")
    parser.add_argument("--learnability", type=Path, default=None, help="train a small CNN on this data set instead")
    parser.add_argument("--epochs", type=int, default=45, help="epochs for --learnability")
    args = parser.parse_args()
    if args.learnability is not None:
        learnability(args.learnability, args.epochs)
        return
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        records, seconds, images = [], 0.0, 0
        for seed in seeds:
            folder = root / f"seed{seed}"
            summary = write_dataset(folder, seed=seed, count_per_class=args.count, workers=args.workers, overwrite=True)
            seconds += summary.seconds
            images += summary.n_images
            records += read_manifest(folder)
            print(
                f"seed {seed}: {summary.n_images} images in {summary.seconds:.1f}s "
                f"({summary.n_images / summary.seconds:.2f} img/s), detection rate {summary.detection_rate:.4f}"
            )
            if args.sheet is not None and seed == seeds[0]:
                contact_sheet(folder, args.sheet_count, args.sheet)
                print(f"contact sheet: {args.sheet}")

    print()
    print(f"{'class':<12}{'detected':>12}{'rate':>8}{'err px':>9}{'err/IOD':>9}{'p95/IOD':>9}{'max/IOD':>9}")
    overall: list[float] = []
    for class_id in [*CLASS_IDS, "all"]:
        chosen = [r for r in records if class_id in ("all", r["label"])]
        found = [r for r in chosen if r["detected"]]
        px = [float(r["detected_error_px"]) for r in found]
        rel = [
            float(r["detected_error_px"]) / float(np.linalg.norm(np.subtract(*np.array(r["landmarks"])[[1, 0]])))
            for r in found
        ]
        if class_id == "all":
            overall = rel
        print(
            f"{class_id:<12}{len(found):>6}/{len(chosen):<5}{len(found) / len(chosen):>8.3f}"
            f"{statistics.mean(px):>9.2f}{statistics.mean(rel):>9.3f}{float(np.percentile(rel, 95)):>9.3f}"
            f"{max(rel):>9.3f}"
        )
    failures = [f"{r['id']} ({r['detect_error']})" for r in records if not r["detected"]]
    print()
    print(
        f"{images} images over seeds {seeds}: {len(overall)} detected with exactly one face "
        f"({len(overall) / images:.2%}); mean worst-landmark error {statistics.mean(overall):.3f} x IOD"
    )
    print(f"write_dataset throughput with {args.workers} workers: {images / seconds:.2f} images/s")
    if failures:
        print("not detected: " + ", ".join(failures))


if __name__ == "__main__":
    main()
