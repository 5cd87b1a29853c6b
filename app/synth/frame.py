"""The local canvas a head is rendered on, and the random textures shared by its parts.

The head is drawn upright and frontal on its own canvas, at the size it will have in the photo (so no
resampling blurs fine detail such as eyelashes), then placed into the photo with its pose. Coordinates
on this canvas are face widths (see :mod:`app.synth.params`) times ``scale``, plus ``origin``.

Textures are generated for the whole canvas, up front, in a fixed order. Drawing them per part instead
would make the number of random draws depend on where the parts are, and a feature that moves the eyes
would then change the skin texture of the forehead: the "same person without the feature" would not be
the same person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from app.synth.paint import fine_noise, smooth_noise


@dataclass(frozen=True)
class Frame:
    """Face-width units -> pixels of the local canvas."""

    scale: float  # pixels per face width
    origin: tuple[float, float]  # pixel position of the point between the eyes
    shape: tuple[int, int]  # (height, width)

    def px(self, points: np.ndarray | tuple[float, float]) -> np.ndarray:
        """Points in face widths -> canvas pixels."""
        return np.asarray(points, dtype=np.float64) * self.scale + np.asarray(self.origin)

    def n(self, length: float) -> float:
        """A length in face widths -> pixels."""
        return float(length) * self.scale

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Face-width coordinates (X, Y) of every pixel centre, float32."""
        h, w = self.shape
        xs = (np.arange(w, dtype=np.float32) - np.float32(self.origin[0])) / np.float32(self.scale)
        ys = (np.arange(h, dtype=np.float32) - np.float32(self.origin[1])) / np.float32(self.scale)
        return np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))


# The canvas spans x in [-1, 1] and y in [-1.3, 1.65] face widths: hair volume above the vertex, long
# hair and the neck down to the shoulders.
_HALF_WIDTH = 1.0
_ABOVE, _BELOW = 1.3, 1.65


def local_frame(face_px: float) -> Frame:
    """The canvas for a face ``face_px`` pixels wide."""
    width = math.ceil(2 * _HALF_WIDTH * face_px)
    height = math.ceil((_ABOVE + _BELOW) * face_px)
    return Frame(scale=float(face_px), origin=(width / 2.0, _ABOVE * face_px), shape=(height, width))


@dataclass(frozen=True)
class Textures:
    """Noise fields for one person, all canvas-sized."""

    mottle: np.ndarray  # blotchy skin colour variation
    pores: np.ndarray  # fine skin grain
    spots: np.ndarray  # freckles and moles, 0..1 darkening
    brow_hair: np.ndarray  # short strokes running roughly horizontally
    hair_seed: int
    iris_seed: int


def make_textures(seed: int, frame: Frame, *, freckles: float = 0.0, moles: int = 0) -> Textures:
    rng = np.random.default_rng(seed)
    shape = frame.shape
    mottle = smooth_noise(rng, shape, max(4.0, frame.n(0.09)))
    pores = fine_noise(rng, shape, 0.8)
    spots = _spots(rng, frame, freckles, moles)
    raw = rng.standard_normal(shape).astype(np.float32)
    strokes = cv2.GaussianBlur(raw, (0, 0), sigmaX=max(1.0, frame.n(0.012)), sigmaY=max(0.4, frame.n(0.0018)))
    strokes /= max(float(strokes.std()), 1e-6)
    return Textures(
        mottle=mottle,
        pores=pores,
        spots=spots,
        brow_hair=strokes,
        hair_seed=int(rng.integers(0, 2**31 - 1)),
        iris_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _spots(rng: np.random.Generator, frame: Frame, freckles: float, moles: int) -> np.ndarray:
    """Freckles (many faint spots over the cheeks and nose) and a few moles anywhere on the face.

    Drawn with a sub-generator so that the number of spots does not shift the draws after it.
    """
    sub = np.random.default_rng(int(rng.integers(0, 2**31 - 1)))
    spots = np.zeros(frame.shape, np.uint8)
    count = int(freckles * 140)
    if count:
        centre = np.column_stack([sub.normal(0.0, 0.2, count), sub.normal(0.15, 0.09, count)])
        for (x, y), r, a in zip(
            frame.px(centre), sub.uniform(0.003, 0.008, count), sub.uniform(0.15, 0.5, count), strict=True
        ):
            cv2.circle(
                spots,
                (round(x * 16), round(y * 16)),
                max(8, round(frame.n(r) * 16)),
                round(255 * a * freckles),
                -1,
                cv2.LINE_AA,
                4,
            )
    for _ in range(moles):
        # Off the midline, where a dark dot would read as a nostril or the mouth.
        side = 1.0 if sub.uniform() < 0.5 else -1.0
        x, y = frame.px((side * sub.uniform(0.14, 0.42), sub.uniform(-0.4, 0.7)))
        radius = max(8, round(frame.n(sub.uniform(0.005, 0.011)) * 16))
        cv2.circle(spots, (round(x * 16), round(y * 16)), radius, 230, -1, cv2.LINE_AA, 4)
    out = spots.astype(np.float32) / 255.0
    return cv2.GaussianBlur(out, (0, 0), 0.6) if count or moles else out
