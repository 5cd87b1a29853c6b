"""Spectacles: frames, tinted lenses with a glare streak, temple arms.

Real clinical photos often show glasses; a model should learn to look through them. They are placed on
the unaffected eye positions, so hypertelorism moves the eyes *behind* the lenses rather than moving
the glasses (which would put changed pixels outside the eye region's mask).
"""

from __future__ import annotations

import numpy as np

from app.synth.frame import Frame
from app.synth.geometry import FaceGeometry
from app.synth.paint import ellipse_points, polygon_patch, polyline_patch, srgb_to_linear, union
from app.synth.params import Glasses


def _rim(center: np.ndarray, g: Glasses) -> np.ndarray:
    a = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    if g.shape == "round":
        return ellipse_points(center, (g.half_w, g.half_h), n=64)
    # Rounded rectangle as a superellipse.
    c, s = np.cos(a), np.sin(a)
    x = g.half_w * np.sign(c) * np.abs(c) ** 0.5
    y = g.half_h * np.sign(s) * np.abs(s) ** 0.5
    return np.column_stack([center[0] + x, center[1] + y])


def draw_glasses(colour: np.ndarray, alpha: np.ndarray, base: FaceGeometry, g: Glasses, frame: Frame) -> None:
    """Draw onto a linear-colour layer and its alpha, in place."""
    shape, n = frame.shape, frame.n
    frame_col = srgb_to_linear(np.array(g.rgb, np.float32))
    tint = srgb_to_linear(np.array(g.lens_tint, np.float32))
    width = max(1.0, n(g.thickness))
    rims = []
    for eye in base.eyes:
        center = np.array([eye.center[0], 0.012])
        rim = _rim(center, g)
        rims.append(rim)
        lens = polygon_patch(frame.px(rim), shape)
        if lens is not None:
            region = colour[lens.slices]
            xs, ys = lens.grid()
            streak = 0.5 + 0.5 * np.sin((xs + ys) / max(2.0, n(0.03)))
            effect = (1.0 - g.lens_alpha) + g.lens_alpha * tint
            region += lens.data[..., None] * (region * effect - region + (g.glare * 0.15 * streak)[..., None])
    bridge = np.array(
        [
            (rims[0][:, 0].max() - 0.01, -0.02),
            (0.0, -0.04),
            (rims[1][:, 0].min() + 0.01, -0.02),
        ]
    )
    temples = [
        np.array([(rims[0][:, 0].min() + 0.005, -0.01), (-0.5, 0.0)]),
        np.array([(rims[1][:, 0].max() - 0.005, -0.01), (0.5, 0.0)]),
    ]
    strokes = [np.vstack([r, r[:1]]) for r in rims] + [bridge, *temples]
    for stroke in strokes:
        patch = polyline_patch(frame.px(stroke), shape, width, blur=0.4)
        if patch is None:
            continue
        region = colour[patch.slices]
        region += patch.data[..., None] * (frame_col - region)
        union(alpha, patch)
