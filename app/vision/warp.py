"""Affine warps that stay faithful when they shrink.

``cv2.warpAffine`` samples the source bilinearly at one point per output pixel. When the output is much
smaller than the source (a 600 px face warped to 112 px) it skips most source pixels and the result
aliases: jagged edges, moire on hair and skin texture, and, worse, a crop that depends on how large the
face happened to be in the photo. Here the region the warp reads is first reduced with INTER_AREA (a box
filter) to about output resolution, and the matrix is adjusted, so the geometry is exactly unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np

from app.vision.geometry import apply_matrix, compose, invert_affine, linear_scale

# Bilinear sampling is adequate down to half scale; below it, prefilter.
MIN_DIRECT_SCALE = 0.5


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine`` (INTER_LINEAR, black border) with area prefiltering for strong reductions.

    ``matrix`` maps source pixels to output pixels; ``size`` is (width, height) of the output.
    """
    source, source_to_image = _prefiltered_source(image, matrix, size)
    return cv2.warpAffine(
        np.ascontiguousarray(source),
        compose(matrix, source_to_image),
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _prefiltered_source(
    image: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The array to sample from and the matrix mapping its pixels to ``image`` pixels."""
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    scale = linear_scale(matrix)
    if scale >= MIN_DIRECT_SCALE:
        return image, identity
    height, width = image.shape[:2]
    out_w, out_h = size
    corners = np.array([[0, 0], [out_w - 1, 0], [0, out_h - 1], [out_w - 1, out_h - 1]], dtype=np.float64)
    region = apply_matrix(invert_affine(matrix), corners)
    pad = int(np.ceil(2.0 / scale))  # two reduced pixels, so bilinear reads at the edge stay inside
    x0 = int(np.clip(np.floor(region[:, 0].min()) - pad, 0, width - 1))
    y0 = int(np.clip(np.floor(region[:, 1].min()) - pad, 0, height - 1))
    x1 = int(np.clip(np.ceil(region[:, 0].max()) + pad + 1, x0 + 1, width))
    y1 = int(np.clip(np.ceil(region[:, 1].max()) + pad + 1, y0 + 1, height))
    new_w = max(1, round((x1 - x0) * scale))
    new_h = max(1, round((y1 - y0) * scale))
    region_pixels = np.ascontiguousarray(image[y0:y1, x0:x1])
    reduced = cv2.resize(region_pixels, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    # cv2.resize aligns pixel centres: reduced pixel u covers x = (u + 0.5) / fx - 0.5 (+ region offset).
    reduced_to_image = np.array(
        [[1.0 / fx, 0.0, 0.5 / fx - 0.5 + x0], [0.0, 1.0 / fy, 0.5 / fy - 0.5 + y0]], dtype=np.float64
    )
    return reduced, reduced_to_image
