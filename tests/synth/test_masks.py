"""Ground-truth masks cover exactly what a feature changes, and nothing like the whole face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.synth.classes import CLASSES
from app.synth.generate import generate_one

SYNDROMES = [c.id for c in CLASSES if c.features]


@pytest.mark.parametrize("class_id", SYNDROMES)
def test_changed_pixels_lie_inside_the_mask(class_id: str) -> None:
    for index in (0, 1):
        on = generate_one(11, class_id, index)
        off = generate_one(11, class_id, index, severity=0.0)
        assert on.rgb.shape == off.rgb.shape and on.mask.shape == on.rgb.shape[:2]
        assert set(np.unique(on.mask)) <= {0, 255}
        diff = np.abs(on.rgb.astype(np.float64) - off.rgb.astype(np.float64)).sum(axis=2)
        energy = diff**2
        # The feature is visible: a real patch of pixels changed noticeably.
        assert (diff > 12).sum() > 150, (class_id, index)
        near = cv2.dilate(on.mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
        inside = energy[near].sum() / energy.sum()
        assert inside >= 0.95, (class_id, index, inside)
        x, y, w, h = on.face_box
        area = (on.mask > 0).sum() / (w * h)
        assert 0.01 < area < 0.25, (class_id, index, area)
        # The mask sits on the face: its centre lies within the face box.
        ys, xs = np.nonzero(on.mask)
        assert x <= xs.mean() <= x + w and y - 0.1 * h <= ys.mean() <= y + h


def test_unaffected_faces_have_empty_masks() -> None:
    for index in range(3):
        face = generate_one(11, "unaffected", index)
        assert face.severity == 0.0 and face.features == ()
        assert face.mask.shape == face.rgb.shape[:2] and not face.mask.any()


def test_landmarks_are_a_face() -> None:
    for class_id in ("unaffected", "syn_a", "syn_g"):
        face = generate_one(12, class_id, 0)
        h, w = face.rgb.shape[:2]
        lm = face.landmarks
        assert lm.shape == (5, 2) and (lm >= 0).all() and (lm[:, 0] < w).all() and (lm[:, 1] < h).all()
        # Upright to within the generator's roll range: eyes left/right, nose between, mouth below.
        eye_axis = lm[1] - lm[0]
        assert eye_axis[0] > 0 and abs(np.degrees(np.arctan2(eye_axis[1], eye_axis[0]))) < 15
        assert lm[3, 0] < lm[4, 0]
        down = np.array([-eye_axis[1], eye_axis[0]]) / np.linalg.norm(eye_axis)
        eyes = lm[:2].mean(axis=0)
        assert 0 < (lm[2] - eyes) @ down < (lm[3:].mean(axis=0) - eyes) @ down
