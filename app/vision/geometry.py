"""2-D affine helpers shared by detection and alignment.

Matrices are 2x3 float64 in OpenCV's convention: ``[x', y'] = M @ [x, y, 1]``, pixel centres at integer
coordinates. Angles are in degrees, positive = counter-clockwise *as seen on screen* (y points down),
which is what ``cv2.getRotationMatrix2D`` uses.
"""

from __future__ import annotations

import math

import numpy as np


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix; returns float64 (N, 2)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (raises if it is singular)."""
    m = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(m[:, :2])
    return np.hstack([linear_inv, (-linear_inv @ m[:, 2])[:, None]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix applying ``inner`` first, then ``outer``."""
    o = np.asarray(outer, dtype=np.float64)
    i = np.asarray(inner, dtype=np.float64)
    return np.hstack([o[:, :2] @ i[:, :2], (o[:, :2] @ i[:, 2] + o[:, 2])[:, None]])


def linear_scale(matrix: np.ndarray) -> float:
    """The isotropic scale of a similarity (sqrt of the absolute determinant of its linear part)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:, :2]))))


def rotation_about(center: tuple[float, float], angle_deg: float) -> np.ndarray:
    """Rotation by ``angle_deg`` (counter-clockwise on screen) about ``center``; same as OpenCV's."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    cx, cy = center
    return np.array([[c, s, (1 - c) * cx - s * cy], [-s, c, s * cx + (1 - c) * cy]], dtype=np.float64)


def rotation_canvas(
    shape: tuple[int, ...], angle_deg: float, center: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Rotate an image of ``shape`` (H, W, ...) about ``center`` onto a canvas that holds all of it.

    Returns the matrix (original -> canvas) and the canvas size as (width, height) for cv2.warpAffine.
    The canvas is expanded rather than cropped so a face near the border is never cut off.
    """
    height, width = shape[:2]
    if center is None:
        center = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = rotation_about(center, angle_deg)
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64)
    mapped = apply_matrix(matrix, corners)
    low = np.floor(mapped.min(axis=0))
    high = np.ceil(mapped.max(axis=0))
    matrix[:, 2] -= low
    size = (int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1)
    return matrix, size
