"""``gestaltlens train``: train the demo model on a synthetic data set (registered by app.cli).

Kept out of ``app/cli.py`` so the trainer's options live next to the trainer. Progress goes to stderr as a
one-line bar (epoch, batch, running loss and accuracy, learning rate) so stdout carries only the summary.
torch is imported only when the command runs, so registering it does not slow down every other command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

if TYPE_CHECKING:
    from app.nets.train import TrainProgress

__all__ = ["ProgressBar", "train_command"]


class ProgressBar:
    """A tiny stderr progress bar (tqdm is not a dependency); redraws at most ~10 times a second."""

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._last = 0.0
        self._open = False  # a bar line is drawn and not yet ended
        self._drawn = 0  # length of the bar line last drawn
        self._started = time.perf_counter()

    def __call__(self, event: TrainProgress) -> None:
        if event.phase != "train":
            self.stream.write(("\n" if self._open else "") + f"[{event.phase}] {event.message}\n")
            self._open = False
            self.stream.flush()
            return
        last_of_epoch = event.batch == event.batches
        now = time.perf_counter()
        if not last_of_epoch and now - self._last < 0.1:
            return
        self._last = now
        done = ((event.epoch - 1) * event.batches + event.batch) / max(1, event.epochs * event.batches)
        filled = round(done * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = now - self._started
        eta = elapsed / done - elapsed if done > 0 else 0.0
        line = (f"epoch {event.epoch}/{event.epochs} [{bar}] {done:4.0%}  loss {event.loss:.3f}  "
                f"acc {event.accuracy:.3f}  lr {event.lr:.2e}  eta {eta:4.0f}s")
        self.stream.write("\r" + line.ljust(self._drawn))  # pad: a shorter line must cover the last one
        self._drawn = len(line)
        self._open = not last_of_epoch
        if last_of_epoch:
            self._drawn = 0
            self.stream.write("\n")
        self.stream.flush()


def train_command(
    data: Annotated[Path, typer.Argument(help="Data set folder written by the synthetic face generator.")],
    out: Annotated[Path, typer.Option(help="Model folder to write; its name must be the model id.")] = Path(
        "models/demo"),
    model_id: Annotated[str, typer.Option(help="Model id (the folder name under models/).")] = "demo",
    version: Annotated[str, typer.Option(help="Model version recorded on the card.")] = "1.0.0",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images.")] = 30,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per optimisation step.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate (cosine schedule).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, data order and augmentation.")] = 0,
    arch: Annotated[str, typer.Option(help="iresnet18, iresnet34, iresnet50 or iresnet100.")] = "iresnet18",
    width: Annotated[float, typer.Option(min=0.01, help="Channel width multiplier (0.25: 16/32/64/128).")] = 0.25,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for torch (fixed for reproducibility).")] = 2,
) -> None:
    """Train a syndrome classifier on synthetic faces and write a checked model folder (demo only)."""
    from app.nets.data import DatasetError
    from app.nets.train import TrainError, train_model

    try:
        report = train_model(data, out, model_id=model_id, version=version, arch=arch, width=width, epochs=epochs,
                             batch_size=batch_size, lr=lr, seed=seed, threads=threads, progress=ProgressBar())
    except (DatasetError, TrainError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    metrics = report.metrics
    typer.echo(
        f"{report.version} written to {report.model_dir}: test top-1 {metrics['top1']:.3f}, "
        f"top-5 {metrics['top5']:.3f} (softmax top-1 {metrics['softmax_top1']:.3f}) on {report.n_test} images; "
        f"{report.n_train} training images, {report.train_seconds:.0f}s; reload top-1 {report.reload_top1:.3f}"
    )
