"""The aligned crop must not depend on how the face was photographed.

The astronaut photo is transformed with known similarity transforms (rotation, scale, translation,
mirroring, JPEG re-encoding) onto a larger canvas and run through the whole pipeline. The landmarks found
on the upright original are carried into the transformed photo by the known transform, then into the new
crop by the new alignment: if detection and alignment are equivariant they land where the original's
alignment put them. 4 crop pixels is about 11% of the inter-ocular distance in the crop.

For a mirrored photo the physical points are tracked the same way; the expected crop is the original crop
mirrored about the template's vertical axis (the detector relabels the subject's right eye as the
image-left eye, and alignment maps that label onto the template's left eye).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.vision.align import ARCFACE_TEMPLATE, apply_matrix
from app.vision.detect import FaceDetector
from app.vision.pipeline import ProcessedPhoto, process_photo
from tests.vision.helpers import encode, place

TOLERANCE_PX = 4.0
# The template's axis of symmetry: mean of the midpoints of the eye and mouth pairs and the nose.
TEMPLATE_AXIS = float(
    np.mean(
        [
            (ARCFACE_TEMPLATE[0, 0] + ARCFACE_TEMPLATE[1, 0]) / 2,
            (ARCFACE_TEMPLATE[3, 0] + ARCFACE_TEMPLATE[4, 0]) / 2,
            ARCFACE_TEMPLATE[2, 0],
        ]
    )
)

CASES = {
    "identity-on-canvas": {},
    "rot+15": {"angle": 15},
    "rot-15": {"angle": -15},
    "rot+30": {"angle": 30},
    "rot-30": {"angle": -30},
    "rot+45": {"angle": 45},
    "rot-45": {"angle": -45},
    "rot+90": {"angle": 90},
    "rot180": {"angle": 180},
    "scale0.6": {"scale": 0.6},
    "scale1.8": {"scale": 1.8},
    "shift": {"shift": (137.0, 61.0)},
    "rot+20-scale0.7-shift": {"angle": 20, "scale": 0.7, "shift": (25.0, 90.0)},
    "rot-35-scale1.5": {"angle": -35, "scale": 1.5},
    "mirror": {"mirror": True},
    "mirror-rot+25-scale1.2": {"mirror": True, "angle": 25, "scale": 1.2},
    "jpeg80-rot+10-scale1.2": {"angle": 10, "scale": 1.2, "jpeg": 80},
    "jpeg80": {"jpeg": 80},
}


def crop_error(
    upright: ProcessedPhoto,
    processed: ProcessedPhoto,
    to_photo: np.ndarray,
    *,
    mirrored: bool,
) -> float:
    """Largest distance (crop px) between where the original's landmarks land now and where they should."""
    carried = apply_matrix(processed.aligned.matrix, apply_matrix(to_photo, upright.face.landmarks))
    expected = upright.aligned.landmarks.copy()
    if mirrored:
        expected[:, 0] = 2 * TEMPLATE_AXIS - expected[:, 0]
    return float(np.linalg.norm(carried - expected, axis=1).max())


def transformed_upload(astronaut: np.ndarray, case: dict) -> tuple[bytes, np.ndarray]:
    params = {k: v for k, v in case.items() if k != "jpeg"}
    canvas, to_canvas = place(astronaut, **params)
    if "jpeg" in case:
        return encode(canvas, "JPEG", quality=case["jpeg"]), to_canvas
    return encode(canvas, "PNG"), to_canvas


@pytest.mark.parametrize("name", list(CASES))
def test_alignment_is_equivariant(
    name: str, astronaut: np.ndarray, upright: ProcessedPhoto, detector: FaceDetector
) -> None:
    case = CASES[name]
    upload, to_canvas = transformed_upload(astronaut, case)
    processed = process_photo(upload, detector=detector)
    assert len(processed.faces) == 1
    error = crop_error(upright, processed, to_canvas, mirrored=case.get("mirror", False))
    print(f"{name}: {error:.2f} px")
    assert error <= TOLERANCE_PX


def test_roll_correction_is_what_makes_tilted_faces_align(
    astronaut: np.ndarray, upright: ProcessedPhoto, detector: FaceDetector
) -> None:
    upload, to_canvas = transformed_upload(astronaut, {"angle": 30})
    without = process_photo(upload, detector=detector, roll_correction=False)
    with_correction = process_photo(upload, detector=detector)
    # Each is compared with the upright photo processed the same way.
    upright_without = process_photo(encode(astronaut, "PNG"), detector=detector, roll_correction=False)
    error_without = crop_error(upright_without, without, to_canvas, mirrored=False)
    error_with = crop_error(upright, with_correction, to_canvas, mirrored=False)
    print(f"30 degrees: {error_without:.2f} px without roll correction, {error_with:.2f} px with it")
    assert error_with <= TOLERANCE_PX
