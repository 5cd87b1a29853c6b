"""Alignment error and speed of the vision pipeline on a tilted face.

    python bench/bench_vision.py [--repeats N]

The astronaut photo (scikit-image) is rotated by each roll onto a canvas large enough to hold it, saved as
PNG, and run through ``process_photo`` (decode + detect + align) with and without roll correction. The
error is how far (in 112x112 crop pixels) the landmarks found on the upright photo land from where the
upright photo's own alignment put them, after being carried through the known rotation and the new
alignment; 0 means the crop does not depend on the roll. Times are the median over ``--repeats`` runs on
this machine, in one process, so the two columns are comparable with each other.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.vision.align import apply_matrix
from app.vision.detect import FaceDetector
from app.vision.errors import IntakeError
from app.vision.geometry import rotation_canvas
from app.vision.pipeline import ProcessedPhoto, process_photo

ROLLS = (0, 5, 10, 15, 20, 30, 45, 60, 90, 180)


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def timed(
    upload: bytes, detector: FaceDetector, *, roll_correction: bool, repeats: int
) -> tuple[ProcessedPhoto, float]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = process_photo(upload, detector=detector, roll_correction=roll_correction)
        times.append(time.perf_counter() - start)
    assert result is not None
    return result, statistics.median(times)


def error_px(reference: ProcessedPhoto, processed: ProcessedPhoto, to_photo: np.ndarray) -> float:
    carried = apply_matrix(processed.aligned.matrix, apply_matrix(to_photo, reference.face.landmarks))
    return float(np.linalg.norm(carried - reference.aligned.landmarks, axis=1).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats per cell (median is shown)")
    args = parser.parse_args()

    from skimage import data

    astronaut = data.astronaut()
    detector = FaceDetector()
    upright = png(astronaut)
    # Each column is compared with the upright photo processed the same way.
    references = {}
    for enabled in (False, True):
        references[enabled] = process_photo(upright, detector=detector, roll_correction=enabled)
    reference = references[True]

    print(
        f"astronaut {astronaut.shape[1]}x{astronaut.shape[0]}, "
        f"inter-ocular ~{reference.face.interocular:.0f} px; "
        f"OpenCV {cv2.__version__}, {os.cpu_count()} CPUs, cv2 threads {cv2.getNumThreads()}"
    )
    print("error: max landmark displacement in the 112x112 crop vs the upright photo's crop (px)")
    print("off/on: roll correction disabled/enabled; ms: decode + detect + align per photo (median)")
    print()
    header = f"{'roll':>6} {'canvas':>9} | {'error off':>14} {'error on':>8} | {'ms off':>7} {'ms on':>7}"
    print(header)
    print("-" * len(header))
    for roll in ROLLS:
        to_canvas, size = rotation_canvas(astronaut.shape, roll)
        upload = png(cv2.warpAffine(astronaut, to_canvas, size, flags=cv2.INTER_LINEAR))
        cells = []
        for enabled in (False, True):
            try:
                processed, seconds = timed(upload, detector, roll_correction=enabled, repeats=args.repeats)
            except IntakeError as error:  # e.g. a sideways face misread so badly it seems tiny
                cells.append((error.code, "-"))
                continue
            error = error_px(references[enabled], processed, to_canvas)
            cells.append((f"{error:.2f}", f"{seconds * 1000:.0f}"))
        (err_off, ms_off), (err_on, ms_on) = cells
        print(f"{roll:>5}° {size[0]:>4}x{size[1]:<4} | {err_off:>14} {err_on:>8} | {ms_off:>7} {ms_on:>7}")


if __name__ == "__main__":
    main()
