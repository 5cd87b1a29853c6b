"""Fixtures for the vision tests: real photographs shipped with scikit-image, one shared detector, and
the upright astronaut processed once (the reference every equivariance test compares against)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from app.vision.detect import FaceDetector
from app.vision.pipeline import ProcessedPhoto, process_photo
from tests.vision.helpers import encode


@pytest.fixture(scope="session")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_png(astronaut: np.ndarray) -> bytes:
    return encode(astronaut, "PNG")


@pytest.fixture(scope="session")
def upright(astronaut_png: bytes, detector: FaceDetector) -> ProcessedPhoto:
    """The astronaut, as the pipeline sees it upright (PNG is lossless, so photo.rgb ~ the original)."""
    return process_photo(astronaut_png, detector=detector)
