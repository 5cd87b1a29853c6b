"""Align a face to the ArcFace 112x112 template with a least-squares similarity transform.

GestaltMatcher-Arc (and every ArcFace-family network) was trained on crops made exactly this way, so the
crop geometry must match: five landmarks -> similarity (rotation, uniform scale, translation; never a
reflection or shear, which would distort facial proportions the classifier relies on) -> 112x112 crop.

The photo->crop matrix and its inverse are kept, because attribution maps are computed on the crop and
drawn back onto the full photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.vision.geometry import apply_matrix, invert_affine
from app.vision.warp import warp_affine

__all__ = ["ARCFACE_TEMPLATE", "AlignedFace", "align_face", "apply_matrix", "similarity_matrix"]

#: Landmark positions in a 112x112 crop, in YuNet/ArcFace order: image-left eye (subject's right),
#: image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
ARCFACE_TEMPLATE: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE.setflags(write=False)

TEMPLATE_SIZE = 112


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop and the geometry that links it to the photo."""

    crop: np.ndarray  # (size, size, 3) uint8 RGB
    matrix: np.ndarray  # (2, 3) photo -> crop
    inverse: np.ndarray  # (2, 3) crop -> photo
    landmarks: np.ndarray  # (5, 2) the face's landmarks in crop coordinates
    residual: float  # RMS distance in crop pixels between ``landmarks`` and the template


def similarity_matrix(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama, 1991), 2x3.

    Written out rather than borrowed: ``cv2.estimateAffinePartial2D`` is RANSAC/LMEDS by default and
    with five points may drop one as an "outlier", changing the crop for reasons unrelated to the face;
    scikit-image's SimilarityTransform is the same LS fit but is a heavy dependency for fifteen lines
    of algebra, and its estimate/from_estimate API is mid-deprecation. The closed form below is the
    exact least-squares optimum with reflections excluded.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float((src_c**2).sum(axis=1).mean())
    if src_var <= 1e-12:
        raise ValueError("source points are all identical; cannot fit a similarity transform")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best orthogonal fit is a reflection: forbid it
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum()) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> AlignedFace:
    """Warp the face with these five landmarks onto the (scaled) ArcFace template.

    Residuals of 3-4 crop pixels are normal for real faces: the template is an average face, and
    dysmorphic faces in particular differ from it. They are reported, not treated as errors.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    template = ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE)
    matrix = similarity_matrix(landmarks, template)
    # Bilinear, black border, as in GestaltMatcher-Arc; large faces are area-prefiltered (see warp.py).
    crop = warp_affine(rgb, matrix, (size, size))
    crop_landmarks = apply_matrix(matrix, landmarks)
    residual = float(np.sqrt(((crop_landmarks - template) ** 2).sum(axis=1).mean()))
    return AlignedFace(
        crop=crop,
        matrix=matrix,
        inverse=invert_affine(matrix),
        landmarks=crop_landmarks,
        residual=residual,
    )
