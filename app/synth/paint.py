"""Raster primitives: anti-aliased shapes, compact bumps, smooth noise, strand textures, colour space.

Shapes are rasterised with OpenCV (anti-aliased, sub-pixel vertices) into small patches around the shape
rather than whole canvases: a face has dozens of small parts, and full-canvas operations per part
would dominate the render time.

Height bumps use a compactly supported profile, (1 - r^2)^2 inside an ellipse and exactly 0 outside,
instead of Gaussians. A feature that moves a bump then changes pixels *only* within the union of the
bump's old and new supports, which is what lets the ground-truth masks be exact rather than "mostly".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Patch:
    """A float32 array placed at (y0, x0) of a larger canvas."""

    y0: int
    x0: int
    data: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.data.shape[:2]
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (x, y) of the patch in canvas pixels, float32."""
        h, w = self.data.shape[:2]
        ys, xs = np.mgrid[self.y0 : self.y0 + h, self.x0 : self.x0 + w].astype(np.float32)
        return xs, ys


def bbox(points: np.ndarray, pad: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer (y0, x0, y1, x1) around points plus ``pad``, clipped to ``shape``; None if empty."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0 = max(0, int(np.floor(pts[:, 0].min() - pad)))
    y0 = max(0, int(np.floor(pts[:, 1].min() - pad)))
    x1 = min(shape[1], int(np.ceil(pts[:, 0].max() + pad)) + 1)
    y1 = min(shape[0], int(np.ceil(pts[:, 1].max() + pad)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return y0, x0, y1, x1


def polygon_patch(points: np.ndarray, shape: tuple[int, int], *, blur: float = 0.0) -> Patch | None:
    """Coverage (0..1) of a filled polygon, anti-aliased, optionally softened by a Gaussian of ``blur`` px."""
    box = bbox(points, 3.0 * blur + 2.0, shape)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    pts = np.round((np.asarray(points, dtype=np.float64) - [x0, y0]) * _ONE).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    data = canvas.astype(np.float32) / 255.0
    if blur > 0.0:
        data = cv2.GaussianBlur(data, (0, 0), blur)
    return Patch(y0, x0, data)


def polyline_patch(points: np.ndarray, shape: tuple[int, int], thickness: float, *, blur: float = 0.0) -> Patch | None:
    """Coverage of a thick open polyline."""
    pad = thickness + 3.0 * blur + 2.0
    box = bbox(points, pad, shape)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    pts = np.round((np.asarray(points, dtype=np.float64) - [x0, y0]) * _ONE).astype(np.int32)
    cv2.polylines(canvas, [pts], False, 255, max(1, round(thickness)), lineType=cv2.LINE_AA, shift=_SHIFT)
    data = canvas.astype(np.float32) / 255.0
    if blur > 0.0:
        data = cv2.GaussianBlur(data, (0, 0), blur)
    return Patch(y0, x0, data)


def ellipse_points(center: np.ndarray, axes: tuple[float, float], angle: float = 0.0, n: int = 48) -> np.ndarray:
    """Polygon approximating an ellipse (angle in radians)."""
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x, y = axes[0] * np.cos(a), axes[1] * np.sin(a)
    c, s = np.cos(angle), np.sin(angle)
    return np.column_stack([center[0] + c * x - s * y, center[1] + s * x + c * y])


def ellipse_patch(
    center: np.ndarray, axes: tuple[float, float], shape: tuple[int, int], *, angle: float = 0.0, blur: float = 0.0
) -> Patch | None:
    return polygon_patch(ellipse_points(center, axes, angle), shape, blur=blur)


def add_bump(
    height: np.ndarray,
    center: np.ndarray,
    axes: tuple[float, float],
    amplitude: float,
    *,
    angle: float = 0.0,
    power: float = 2.0,
) -> None:
    """Add ``amplitude * (1 - r^2)^power`` inside the ellipse (r = elliptical radius) to ``height`` in place."""
    reach = max(axes) + 1.0
    box = bbox(np.array([center]), reach, height.shape[:2])
    if box is None or min(axes) <= 0:
        return
    y0, x0, y1, x1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs - np.float32(center[0]), ys - np.float32(center[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (c * dx + s * dy) / np.float32(axes[0])
    v = (-s * dx + c * dy) / np.float32(axes[1])
    inside = np.clip(1.0 - (u * u + v * v), 0.0, None)
    height[y0:y1, x0:x1] += np.float32(amplitude) * inside**power


def blend(
    target: np.ndarray, patch: Patch | None, colour: np.ndarray | tuple[float, ...], opacity: float = 1.0
) -> None:
    """Paint ``colour`` over ``target`` (H, W, 3) with the patch's coverage times ``opacity``, in place.

    ``colour`` may be a triple or an array shaped like the patch with 3 channels.
    """
    if patch is None:
        return
    region = target[patch.slices]
    alpha = (patch.data * np.float32(opacity))[..., None]
    region += alpha * (np.asarray(colour, dtype=np.float32) - region)


def multiply(target: np.ndarray, patch: Patch | None, factor: float | np.ndarray) -> None:
    """Scale ``target`` by ``1 + coverage * (factor - 1)`` (darken or lighten a soft area), in place."""
    if patch is None:
        return
    region = target[patch.slices]
    factor = np.asarray(factor, dtype=np.float32)
    coverage = patch.data[..., None] if region.ndim == 3 else patch.data
    region *= 1.0 + coverage * (factor - 1.0)


def union(target: np.ndarray, patch: Patch | None) -> None:
    """target = max(target, coverage), in place (alpha union)."""
    if patch is None:
        return
    region = target[patch.slices]
    np.maximum(region, patch.data, out=region)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with features about ``cell`` pixels across (bicubic value noise)."""
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / cell)) + 3), max(2, int(np.ceil(w / cell)) + 3)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    out = big[int(cell) : int(cell) + h, int(cell) : int(cell) + w]
    if out.shape != (h, w):  # tiny shapes: fall back to a plain resize
        out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    std = float(out.std())
    return (out - float(out.mean())) / (std if std > 1e-6 else 1.0)


def fine_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise blurred by ``sigma`` px, unit variance: pores, grain, hair fibres."""
    noise = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    std = float(noise.std())
    return noise / (std if std > 1e-6 else 1.0)


def strand_texture(rng: np.random.Generator, coordinate: np.ndarray, period: float, n: int = 4096) -> np.ndarray:
    """Values in [0, 1] varying fast across ``coordinate`` only: hair strands running along its level lines.

    ``coordinate`` is, e.g., the angle around the crown (strands radiate from it) or x (strands hang
    down). Two octaves of 1-D noise looked up with linear interpolation; periodic with ``n * period``.
    """
    base = rng.standard_normal(n).astype(np.float32)
    base = np.convolve(np.concatenate([base[-3:], base, base[:3]]), np.ones(3, np.float32) / 3.0, mode="same")[3:-3]
    fine = rng.standard_normal(n).astype(np.float32)
    pos = np.asarray(coordinate, dtype=np.float32) / np.float32(period)
    value = 0.5 + 0.13 * _lookup(base, pos * np.float32(0.25)) + 0.13 * _lookup(fine, pos)
    return np.clip(value, 0.0, 1.0).astype(np.float32)


def _lookup(table: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Periodic linear interpolation of a 1-D table (float32 throughout; np.interp works in float64)."""
    n = len(table)
    floor = np.floor(position)
    frac = position - floor
    index = np.mod(floor.astype(np.int64), n)
    return table[index] * (1.0 - frac) + table[(index + 1) % n] * frac


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Approximate sRGB decoding (gamma 2.2): shading is multiplied in linear light."""
    return np.power(np.clip(rgb, 0.0, None), 2.2, dtype=np.float32)


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    return np.power(np.clip(rgb, 0.0, None), 1.0 / 2.2, dtype=np.float32)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
