"""The similarity fit and the crop geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from app.vision.align import ARCFACE_TEMPLATE, align_face, apply_matrix, similarity_matrix
from app.vision.geometry import compose, invert_affine, linear_scale, rotation_about
from app.vision.pipeline import ProcessedPhoto


def test_template_is_the_arcface_template() -> None:
    assert ARCFACE_TEMPLATE.shape == (5, 2)
    assert ARCFACE_TEMPLATE.dtype == np.float64
    assert ARCFACE_TEMPLATE[0].tolist() == [38.2946, 51.6963]
    assert ARCFACE_TEMPLATE[4].tolist() == [70.7299, 92.2041]


def test_recovers_a_known_similarity_exactly() -> None:
    truth = rotation_about((20.0, -5.0), 37.0)
    truth[:, :2] *= 2.7
    truth[:, 2] += (13.0, -8.0)
    src = np.array([[10.0, 12.0], [80.0, 15.0], [45.0, 50.0], [20.0, 90.0], [70.0, 88.0]])
    fitted = similarity_matrix(src, apply_matrix(truth, src))
    np.testing.assert_allclose(fitted, truth, atol=1e-9)


def test_matches_scikit_image_least_squares_fit_on_noisy_points() -> None:
    rng = np.random.default_rng(7)
    src = ARCFACE_TEMPLATE * 3.1 + (400.0, 250.0) + rng.normal(0.0, 4.0, (5, 2))
    ours = similarity_matrix(src)
    reference = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE)
    assert reference  # a successful estimation is truthy in scikit-image 0.26
    np.testing.assert_allclose(ours, reference.params[:2], atol=1e-8)


def test_an_outlier_is_fitted_not_discarded() -> None:
    """A pure least-squares fit uses every point; RANSAC (cv2's default) would drop the moved one."""
    src = ARCFACE_TEMPLATE.copy()
    src[2] += (15.0, 10.0)
    fitted = similarity_matrix(src)
    reference = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(fitted, reference.params[:2], atol=1e-8)
    assert not np.allclose(fitted, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), atol=1e-3)


def test_never_fits_a_reflection() -> None:
    mirrored = ARCFACE_TEMPLATE * (-1.0, 1.0) + (112.0, 0.0)  # same points, mirrored, labels not swapped
    fitted = similarity_matrix(mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0


def test_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError):
        similarity_matrix(np.ones((5, 2)))
    with pytest.raises(ValueError):
        similarity_matrix(np.ones((4, 2)))


def test_aligned_face_fields(upright: ProcessedPhoto) -> None:
    aligned = upright.aligned
    assert aligned.crop.shape == (112, 112, 3) and aligned.crop.dtype == np.uint8
    assert aligned.matrix.shape == (2, 3) and aligned.inverse.shape == (2, 3)
    np.testing.assert_allclose(aligned.landmarks, apply_matrix(aligned.matrix, upright.face.landmarks))
    rms = np.sqrt(((aligned.landmarks - ARCFACE_TEMPLATE) ** 2).sum(axis=1).mean())
    assert aligned.residual == pytest.approx(rms)
    assert aligned.residual < 6.0  # real faces: 3-4 px is normal


def test_inverse_maps_the_template_back_onto_the_landmarks(upright: ProcessedPhoto) -> None:
    aligned, landmarks = upright.aligned, upright.face.landmarks
    np.testing.assert_allclose(compose(aligned.inverse, aligned.matrix), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    back = apply_matrix(aligned.inverse, ARCFACE_TEMPLATE)
    photo_rms = np.sqrt(((back - landmarks) ** 2).sum(axis=1).mean())
    # The residual is measured in crop pixels; in photo pixels it is divided by the crop's scale.
    assert photo_rms * linear_scale(aligned.matrix) == pytest.approx(aligned.residual, rel=1e-6)


def test_crop_warped_back_reproduces_the_photo_in_the_face_region(upright: ProcessedPhoto) -> None:
    rgb, aligned = upright.photo.rgb, upright.aligned
    height, width = rgb.shape[:2]
    back = cv2.warpAffine(aligned.crop, aligned.inverse, (width, height), flags=cv2.INTER_LINEAR)
    inside = np.zeros((112, 112), np.uint8)
    inside[20:92, 20:92] = 1  # away from the crop border, where interpolation meets black
    mask = cv2.warpAffine(inside, aligned.inverse, (width, height), flags=cv2.INTER_NEAREST).astype(bool)
    assert mask.sum() > 2000
    difference = np.abs(back.astype(np.int16) - rgb.astype(np.int16))[mask].mean()
    print(f"mean abs difference in the face region: {difference:.2f} grey levels")
    assert difference < 12.0


def test_large_face_crop_is_antialiased() -> None:
    """Shrinking a large face 6x must average fine detail, not sample it (which aliases).

    A 1-pixel checkerboard is the extreme case: its faithful reduction is flat mid-grey, while plain
    bilinear warpAffine picks individual black and white pixels.
    """
    yy, xx = np.mgrid[0:1000, 0:1000]
    checker = np.where((xx + yy) % 2 == 0, 255, 0).astype(np.uint8)
    photo = np.dstack([checker] * 3)
    landmarks = ARCFACE_TEMPLATE * 6.0 + (150.0, 120.0)
    crop = align_face(photo, landmarks).crop.astype(np.float64)
    naive = cv2.warpAffine(photo, similarity_matrix(landmarks), (112, 112), flags=cv2.INTER_LINEAR)
    print(
        f"reduced checkerboard: prefiltered {crop.mean():.1f}+-{crop.std():.1f}, "
        f"plain warpAffine {naive.mean():.1f}+-{naive.std():.1f}"
    )
    assert abs(crop.mean() - 127.5) < 3.0
    assert crop.std() < 5.0
    # The test image really does alias without the prefilter (here: every sample lands on white).
    assert abs(naive.mean() - 127.5) > 20.0 or naive.std() > 20.0


def test_align_face_size_scales_the_template(upright: ProcessedPhoto) -> None:
    aligned = align_face(upright.photo.rgb, upright.face.landmarks, size=224)
    assert aligned.crop.shape == (224, 224, 3)
    np.testing.assert_allclose(aligned.matrix[:, :2], upright.aligned.matrix[:, :2] * 2, atol=1e-9)
    assert invert_affine(aligned.matrix) == pytest.approx(aligned.inverse)
