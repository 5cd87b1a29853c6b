"""process_photo: which face is analysed, and the refusals the client sees."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from app.vision.detect import FaceDetector
from app.vision.errors import IntakeError
from app.vision.pipeline import ProcessedPhoto, process_photo
from tests.vision.helpers import encode


@pytest.fixture(scope="module")
def two_astronauts(astronaut: np.ndarray) -> bytes:
    return encode(np.hstack([astronaut, astronaut[:, ::-1]]), "PNG")


def refused(data_: bytes, code: str, detector: FaceDetector, **kwargs: object) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        process_photo(data_, detector=detector, **kwargs)
    assert caught.value.code == code, caught.value.detail
    assert caught.value.status_code == 422
    return caught.value


def test_single_face_is_aligned(upright: ProcessedPhoto) -> None:
    assert len(upright.faces) == 1 and upright.face_index == 0
    assert upright.aligned.crop.shape == (112, 112, 3)
    assert upright.photo.source_format == "png"
    # The roll-corrected landmarks are the same face as the first-pass detection.
    assert np.linalg.norm(upright.face.landmarks - upright.faces[0].landmarks, axis=1).max() < 8.0


def test_two_faces_must_be_chosen(two_astronauts: bytes, detector: FaceDetector) -> None:
    error = refused(two_astronauts, "multiple_faces", detector)
    faces = error.extra["faces"]
    assert [f["index"] for f in faces] == [0, 1]
    assert all(len(f["box"]) == 4 and 0.8 < f["score"] <= 1.0 for f in faces)
    centres = sorted(f["box"][0] + f["box"][2] / 2 for f in faces)
    assert centres[0] < 512 < centres[1]  # one face in each half
    assert "face_index" in error.detail
    assert error.to_dict()["faces"] == faces


@pytest.mark.parametrize("index", [0, 1])
def test_chosen_face_is_aligned(two_astronauts: bytes, detector: FaceDetector, index: int) -> None:
    processed = process_photo(two_astronauts, face_index=index, detector=detector)
    assert processed.face_index == index and len(processed.faces) == 2
    chosen = processed.faces[index]
    assert np.linalg.norm(processed.face.landmarks.mean(axis=0) - chosen.landmarks.mean(axis=0)) < 8.0
    crop_centre_in_photo = processed.aligned.inverse @ np.array([56.0, 56.0, 1.0])
    x, y, w, h = chosen.box
    assert x < crop_centre_in_photo[0] < x + w and y < crop_centre_in_photo[1] < y + h


@pytest.mark.parametrize("index", [2, -1, 99])
def test_face_index_out_of_range(two_astronauts: bytes, detector: FaceDetector, index: int) -> None:
    error = refused(two_astronauts, "invalid_face_index", detector, face_index=index)
    assert "between 0 and 1" in error.detail


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_no_face(detector: FaceDetector, name: str) -> None:
    refused(encode(getattr(data, name)(), "JPEG", quality=90), "no_face", detector)


def test_face_index_zero_is_valid_for_a_single_face(astronaut_png: bytes, detector: FaceDetector) -> None:
    assert process_photo(astronaut_png, face_index=0, detector=detector).face_index == 0
    refused(astronaut_png, "invalid_face_index", detector, face_index=1)


def test_small_face_is_refused(astronaut: np.ndarray, detector: FaceDetector) -> None:
    small = cv2.resize(astronaut, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)  # face ~20 px
    faces = detector.detect(small)
    assert len(faces) == 1, "the detector must find the small face for this test to mean anything"
    error = refused(encode(small, "PNG"), "face_too_small", detector)
    assert "pixels" in error.detail


def test_uses_the_default_detector_when_none_is_given(astronaut_png: bytes) -> None:
    assert len(process_photo(astronaut_png).faces) == 1
