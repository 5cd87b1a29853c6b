"""``gestaltlens synth``: write a synthetic data set folder, with a progress bar on stderr.

The function is registered as a CLI command elsewhere (app/cli.py); its parameters are typer-annotated so
the registration is a one-liner, and it can equally be called from Python.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from app.synth.classes import CLASS_IDS


class ProgressBar:
    """A one-line text progress bar (tqdm is not a dependency), redrawn at most ~10 times a second."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        filled = int(self.width * done / total) if total else self.width
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total}  {rate:5.1f} img/s  eta {eta:5.0f}s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def synth_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the data set into (created if missing).")],
    seed: Annotated[int, typer.Option(help="Global seed; (seed, class, index) fixes every image.")] = 0,
    count: Annotated[int, typer.Option(help="Images per class (the first syndrome and 'unaffected').")] = 200,
    imbalance: Annotated[
        float,
        typer.Option(
            help="Ratio between the first and the last syndrome's counts (geometric in between); 1 = "
            "balanced. 'unaffected' keeps COUNT."
        ),
    ] = 1.0,
    test_fraction: Annotated[float, typer.Option(help="Share of each class in the test split.")] = 0.2,
    shortcut_class: Annotated[
        str | None,
        typer.Option(
            help=f"Class id that gets a context cue (a sticker beside the face) with "
            f"SHORTCUT_PROBABILITY; other classes get it with 5%. One of: {', '.join(CLASS_IDS)}."
        ),
    ] = None,
    shortcut_probability: Annotated[float, typer.Option(help="Probability of the cue in SHORTCUT_CLASS.")] = 0.9,
    workers: Annotated[int, typer.Option(help="Worker processes (each runs its own face detector).")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace a data set already in OUT.")] = False,
) -> None:
    """Generate synthetic dysmorphology faces with ground-truth masks (research data, not patients)."""
    from app.synth.dataset import write_dataset
    from app.synth.generate import ShortcutSpec

    shortcut = None
    if shortcut_class is not None:
        if shortcut_class not in CLASS_IDS:
            raise typer.BadParameter(
                f"unknown class {shortcut_class!r}; choose one of {', '.join(CLASS_IDS)}", param_hint="--shortcut-class"
            )
        try:
            shortcut = ShortcutSpec(class_id=shortcut_class, probability=shortcut_probability)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--shortcut-probability") from error
    try:
        summary = write_dataset(
            out,
            seed=seed,
            count_per_class=count,
            imbalance=imbalance,
            test_fraction=test_fraction,
            shortcut=shortcut,
            workers=workers,
            progress=ProgressBar(),
            overwrite=overwrite,
        )
    except (ValueError, FileExistsError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(
        f"wrote {summary.n_images} images to {summary.out_dir} in {summary.seconds:.1f}s "
        f"({summary.n_images / max(summary.seconds, 1e-9):.1f} img/s)"
    )
    typer.echo(
        f"detection rate: {summary.detection_rate:.4f} ({summary.n_detected}/{summary.n_images} with exactly "
        "one face found)"
    )
    typer.echo("counts: " + ", ".join(f"{k}={v}" for k, v in summary.counts.items()))
