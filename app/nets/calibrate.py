"""``gestaltlens model calibrate``: calibrate the out-of-range threshold of an existing model folder.

The trainer calibrates a new model on its held-out test split; a model trained before that (or imported)
is calibrated here without retraining, on held-out synthetic faces generated afresh with a seed the
training set never used, through the app's own detection and alignment (so the distances are those the
app will see). The card is rewritten with the ``out_of_distribution`` section only; weights, labels and
gallery are untouched (their digests stay valid). Real photos shipped with scikit-image (the astronaut)
are scored as a check and their verdicts recorded beside the threshold.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from app.nets.card import read_card, write_card
from app.nets.ood import DEFAULT_QUANTILE, OodCalibration, calibrate, scorer_for, with_calibration
from app.nets.predict import infer
from app.nets.registry import read_model_folder

__all__ = ["calibrate_folder", "model_cli", "reference_photos"]

model_cli = typer.Typer(help="Model folders: calibration (and imports).", no_args_is_help=True)


def reference_photos() -> dict[str, bytes]:
    """Real photos of faces available offline (scikit-image's astronaut), as encoded JPEG files."""
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=92)
    return {"skimage astronaut (Eileen Collins)": buffer.getvalue()}


def synthetic_crops(seed: int, per_class: int) -> tuple[np.ndarray, int]:
    """Aligned crops of freshly generated faces (every class), and how many were not detected."""
    from app.synth.classes import CLASS_IDS
    from app.synth.generate import generate_one
    from app.vision.detect import FaceDetector
    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    detector = FaceDetector()
    crops, missed = [], 0
    for index in range(per_class):
        for class_id in CLASS_IDS:  # interleaved, so both calibration halves hold every class
            try:
                crops.append(process_photo(generate_one(seed, class_id, index).jpeg, detector=detector).aligned.crop)
            except IntakeError:
                missed += 1
    return np.stack(crops), missed


def calibrate_folder(folder: Path, *, seed: int, per_class: int, quantile: float = DEFAULT_QUANTILE) -> OodCalibration:
    """Calibrate ``folder``'s model on fresh synthetic faces and rewrite its card; returns the calibration."""
    from app.vision.detect import FaceDetector
    from app.vision.pipeline import process_photo

    model = read_model_folder(folder)
    if model.gallery is None:
        raise ValueError(f"{folder} has no gallery: the out-of-range distance is measured to gallery images")
    crops, missed = synthetic_crops(seed, per_class)
    embeddings = infer(model, crops)[1]
    scorer = scorer_for(model.gallery)
    checks: dict[str, Any] = {}
    detector = FaceDetector()
    for name, photo in reference_photos().items():
        crop = process_photo(photo, detector=detector).aligned.crop
        distance = float(scorer.distances(infer(model, crop[None])[1])[0])
        checks[name] = {"distance": round(distance, 4)}
    calibration = calibrate(
        scorer, embeddings, quantile=quantile,
        source=(f"synthetic faces generated afresh by app.synth (seed {seed}, {per_class} per class, "
                f"{missed} undetected), none of them in the gallery; gestaltlens model calibrate"),
        extra={"seed": seed},
    )
    for entry in checks.values():
        entry["flagged"] = entry["distance"] > calibration.threshold
    calibration = dataclasses.replace(calibration, extra={**calibration.extra, "real_photos": checks})
    card = read_card(folder)
    write_card(with_calibration(card, calibration), folder)
    return calibration


@model_cli.command("calibrate")
def calibrate_command(
    folder: Annotated[Path, typer.Argument(help="Model folder, e.g. models/demo.")] = Path("models/demo"),
    seed: Annotated[int, typer.Option(help="Generator seed; must differ from the training set's.")] = 4242,
    per_class: Annotated[int, typer.Option(min=2, help="Fresh faces per synthetic syndrome.")] = 40,
    quantile: Annotated[float, typer.Option(min=0.5, max=0.999, help="Held-out quantile set as threshold.")] = (
        DEFAULT_QUANTILE),
) -> None:
    """Calibrate the out-of-range threshold (nearest-gallery Mahalanobis distance) and store it in model.json."""
    try:
        result = calibrate_folder(folder, seed=seed, per_class=per_class, quantile=quantile)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{folder}: threshold {result.threshold:.3f} (q{quantile:g} of {result.n_calibration} faces), "
               f"false-flag rate {result.false_flag_rate:.3f} on {result.n_evaluation} other held-out faces")
    for name, entry in result.extra.get("real_photos", {}).items():
        typer.echo(f"  {name}: distance {entry['distance']:.3f} -> {'flagged' if entry['flagged'] else 'NOT flagged'}")
