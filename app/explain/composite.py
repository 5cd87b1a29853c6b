"""Composite faces and syndrome-wise maps (thesis 5.1.4–5.1.5), on aligned 112×112 crops.

Why registration. Averaging 5-point-aligned crops is blurry: the five landmarks fix eyes, nose tip and mouth
corners, but brows, eyelids, nose width, philtrum and jaw still sit at different places in each face, so
their average is a smear. :func:`register` performs a *groupwise* registration: every crop is warped onto the
running mean by dense optical flow (OpenCV's DIS, on grey levels), the mean flow over all crops is removed (so
the composite keeps the group's *average* shape instead of drifting towards one face), and the mean is taken
again; a few iterations converge. The bench compares the sharpness (variance of the Laplacian) of the plain
and the registered composite.

Why the maps follow the same flow. A syndrome-wise map is a mean over per-case maps; for it to sit on the
composite, each case's map is warped with the very flow that moved that case's face onto the composite.
Maps are first put on a common scale (each divided by its 99.5th percentile of |value|, the display scale,
and clipped to [-1, 1]), so that no single case's large logit dominates the mean. The *agreement* map gives,
per pixel, the share of cases whose map has the mean's sign there (0.5 is chance for a symmetric sign).

Pure numpy / OpenCV; nothing here touches the database or the web layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CohortMaps", "Registration", "cohort_maps", "normalise_map", "plain_mean", "register", "sharpness",
           "warp"]

DEFAULT_ITERATIONS = 3


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def plain_mean(crops: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W, 3) float32 mean of uint8 RGB crops."""
    if not crops:
        raise ValueError("no crops to average")
    return np.mean([c.astype(np.float32) for c in crops], axis=0)


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: larger is sharper (blur removes high frequencies)."""
    return float(cv2.Laplacian(_grey(image).astype(np.float64), cv2.CV_64F).var())


def warp(values: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``values`` (H, W) or (H, W, C) resampled at ``x + flow``: moves a face (or its map) onto the composite."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(values.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class Registration:
    plain: np.ndarray  # (H, W, 3) float32 plain mean
    composite: np.ndarray  # (H, W, 3) float32 registered mean
    flows: np.ndarray  # (N, H, W, 2) float32: crop i warped by flows[i] lies on the composite
    iterations: int


def register(crops: Sequence[np.ndarray], *, iterations: int = DEFAULT_ITERATIONS,
             on_progress: Callable[[float], None] | None = None) -> Registration:
    """Groupwise registration of uint8 RGB crops onto their running mean (DIS optical flow, medium preset)."""
    plain = plain_mean(crops)
    h, w = plain.shape[:2]
    flows = np.zeros((len(crops), h, w, 2), dtype=np.float32)
    mean = plain
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    greys = [_grey(c) for c in crops]
    for iteration in range(iterations):
        target = _grey(mean)
        for i, grey in enumerate(greys):
            flows[i] = dis.calc(target, grey, None)  # target(x) ≈ crop(x + flow)
        flows -= flows.mean(axis=0, keepdims=True)  # keep the group's average shape
        mean = np.mean([warp(c, f) for c, f in zip(crops, flows, strict=True)], axis=0)
        if on_progress is not None:
            on_progress((iteration + 1) / iterations)
    return Registration(plain=plain, composite=mean.astype(np.float32), flows=flows, iterations=iterations)


def normalise_map(values: np.ndarray) -> np.ndarray:
    """A map divided by its 99.5th percentile of |value| and clipped to [-1, 1] (all-zero stays zero)."""
    scale = float(np.percentile(np.abs(values), 99.5))
    if scale <= 0:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip(values / scale, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class CohortMaps:
    mean: np.ndarray  # (H, W) float32 mean of the normalised, registered per-case maps
    agreement: np.ndarray  # (H, W) float32 share of cases whose map has the mean's sign at each pixel
    n: int


def cohort_maps(maps: Sequence[np.ndarray], flows: np.ndarray | None) -> CohortMaps:
    """Mean and agreement of per-case maps, each normalised and (when ``flows``) warped like its face."""
    if not maps:
        raise ValueError("no maps")
    moved = [normalise_map(m) if flows is None else warp(normalise_map(m), flows[i]) for i, m in enumerate(maps)]
    stack = np.stack(moved)
    mean = stack.mean(axis=0)
    sign = np.sign(mean)
    agreement = (np.sign(stack) == sign[None]).mean(axis=0)
    return CohortMaps(mean=mean.astype(np.float32), agreement=agreement.astype(np.float32), n=len(maps))
