"""Scalp hair (a cap in front of the head, and longer hair hanging behind it) and the neck.

Hair is drawn from the *unaffected* geometry and never reaches below the brows' upper edge minus a
margin (see the hairline bound in :mod:`app.synth.params`), so no syndrome feature is ever hidden or
revealed by it. Strands are 1-D noise looked up along a coordinate that is constant along a strand: the
angle around the crown for the cap, the horizontal position for hanging hair.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.synth.frame import Frame
from app.synth.geometry import FaceGeometry
from app.synth.paint import polygon_patch, smooth_noise, smoothstep, srgb_to_linear, strand_texture, union
from app.synth.params import Appearance, Light

_SIDE_TOP = -0.28  # where the cranium is widest; the cap's sides hang straight below it


@dataclass
class HairImage:
    cap_colour: np.ndarray  # (H, W, 3) linear
    cap_alpha: np.ndarray
    back_colour: np.ndarray
    back_alpha: np.ndarray
    shadow: np.ndarray  # the cap's soft shadow on the forehead, 0..1


def render_hair(
    base: FaceGeometry, app: Appearance, light: Light, frame: Frame, X: np.ndarray, Y: np.ndarray, seed: int
) -> HairImage:
    rng = np.random.default_rng(seed)
    t = base.t
    shape = frame.shape
    # Fixed draw order regardless of style, so the stream does not depend on it.
    swirl = smooth_noise(rng, shape, max(4.0, frame.n(0.25)))
    locks = smooth_noise(rng, shape, max(3.0, frame.n(0.05)))
    cap_seed, back_seed, ragged_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=3))
    style = app.hair_style
    colour = srgb_to_linear(np.array(app.hair_rgb, np.float32))
    empty = np.zeros(shape, np.float32)
    if style == "bald":
        return HairImage(
            cap_colour=np.zeros((*shape, 3), np.float32),
            cap_alpha=empty,
            back_colour=np.zeros((*shape, 3), np.float32),
            back_alpha=empty,
            shadow=empty,
        )

    crown = np.float32(t.cranium_top - 0.25)
    angle = np.arctan2(Y - crown, X) + np.float32(0.08) * swirl
    cap_strands = strand_texture(np.random.default_rng(cap_seed), angle * np.float32(0.9 * frame.scale), 1.0)
    cap_strands = np.clip(cap_strands + 0.12 * locks, 0.0, 1.0)
    ragged = strand_texture(np.random.default_rng(ragged_seed), X[:1] * np.float32(frame.scale), 6.0)

    vol = app.hair_volume
    half = np.float32(t.cranium_half + vol)
    top = np.float32(_SIDE_TOP - t.cranium_top + vol)
    u = X / half
    v = np.minimum(Y - np.float32(_SIDE_TOP), 0.0) / top
    inside_volume = (u * u + v * v) <= 1.0
    inside_volume &= np.float32(1.0) > Y

    hairline = _hairline(X, app, t.ear_y) + np.float32(0.04) * (ragged - 0.5) * (np.abs(X[:1]) > 0.47)
    cap = inside_volume & (hairline > Y)
    cap_alpha = _fuzzy(cap, cap_strands, frame)

    # Height of the hair volume for shading: an ellipsoid on top, a vertical cylinder below the widest point.
    hh = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None)) * np.float32(0.45 * frame.scale)
    cap_colour = _shade_hair(colour, hh, cap_strands, light)

    if style in ("medium", "long"):
        wave = np.float32(0.03 * frame.scale) * (np.sin(Y * 7.0) + swirl)
        back_strands = strand_texture(np.random.default_rng(back_seed), X * np.float32(frame.scale) + wave, 1.0)
        back_strands = np.clip(back_strands + 0.12 * locks, 0.0, 1.0)
        bottom = (0.55 + 0.25 * app.hair_volume / 0.12) if style == "medium" else (1.05 + 3.0 * app.hair_volume)
        spread = 0.05 if style == "medium" else 0.14
        below = np.clip(Y - np.float32(_SIDE_TOP), 0.0, None)
        width = np.float32(t.cranium_half + 0.8 * vol) + np.float32(spread) * below
        hang = (np.abs(X) <= width) & (np.float32(_SIDE_TOP) <= Y) & (np.float32(bottom) + 0.08 * (ragged - 0.5) >= Y)
        back_alpha = _fuzzy(hang | (inside_volume & (Y < _SIDE_TOP)), back_strands, frame)
        radius = np.float32(t.cranium_half + 0.2) + np.float32(spread) * below
        back_h = np.sqrt(np.clip(1.0 - (X / radius) ** 2, 0.0, None)) * np.float32(0.3 * frame.scale)
        back_colour = _shade_hair(colour * 0.85, back_h, back_strands, light)
    else:
        back_alpha, back_colour = empty, np.zeros((*shape, 3), np.float32)

    shadow = cv2.GaussianBlur(cap_alpha, (0, 0), max(0.8, frame.n(0.02)))
    shift = max(1, round(frame.n(0.02)))
    shadow = np.vstack([np.zeros((shift, shape[1]), np.float32), shadow[:-shift]])
    return HairImage(
        cap_colour=cap_colour, cap_alpha=cap_alpha, back_colour=back_colour, back_alpha=back_alpha, shadow=shadow
    )


def _hairline(X: np.ndarray, app: Appearance, ear_y: float) -> np.ndarray:
    """Lower edge of the cap as a function of x: forehead hairline, temples, sideburns, over the ears."""
    ax = np.abs(X[0])  # the grid's rows are all alike
    # A rounded arc across the forehead (higher at the temples when receding), then down to the sideburns.
    y = app.hairline_y + 0.3 * (ax / 0.45) ** 4 - app.hairline_recession * np.exp(-(((ax - 0.3) / 0.1) ** 2))
    y = y + smoothstep(0.38, 0.49, ax) * (app.sideburn_y - y)
    side_bottom = ear_y - 0.14 if app.hair_style == "short" else ear_y + 0.17
    y = y + smoothstep(0.47, 0.53, ax) * (side_bottom - y)
    return np.broadcast_to(y[None, :].astype(np.float32), X.shape)


def _fuzzy(region: np.ndarray, strands: np.ndarray, frame: Frame) -> np.ndarray:
    """A soft alpha whose edge frays along the strands."""
    if not region.any():
        return np.zeros(region.shape, np.float32)
    soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), max(0.7, frame.n(0.006)))
    return np.clip((soft - 0.5) * 2.2 + 0.5 + 0.9 * (strands - 0.5) * (1.0 - np.abs(2.0 * soft - 1.0)), 0.0, 1.0)


def _shade_hair(colour: np.ndarray, height: np.ndarray, strands: np.ndarray, light: Light) -> np.ndarray:
    gy, gx = np.gradient(height)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny, nz = -gx * inv, -gy * inv, inv
    lx, ly, lz = (np.float32(c) for c in light.direction)
    diffuse = np.clip((nx * lx + ny * ly + nz * lz + 0.2) / 1.2, 0.0, 1.0)
    hz = lz + 1.0
    norm = np.float32(1.0 / np.sqrt(lx * lx + ly * ly + hz * hz))
    sheen = np.clip((nx * lx + ny * ly + nz * hz) * norm, 0.0, 1.0) ** 10
    albedo = colour * (0.3 + 1.1 * strands)[..., None]
    irradiance = (light.ambient + (1.0 - light.ambient) * diffuse) * light.exposure
    out = albedo * irradiance[..., None]
    out += (0.22 * sheen * (0.3 + strands) * light.exposure)[..., None]
    return out * np.asarray(light.rgb, np.float32)


def render_neck(
    base: FaceGeometry,
    app: Appearance,
    light: Light,
    frame: Frame,
    X: np.ndarray,
    Y: np.ndarray,
    head_silhouette: np.ndarray,
    mottle: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The neck (linear colour, alpha), shaded as a cylinder and darkened under the jaw.

    The shadow under the jaw is the head's own silhouette, blurred and moved down; so a smaller jaw
    changes the shadow only within a few hundredths of a face width of where the jaw moved.
    """
    t = base.t
    half = t.neck_half
    top = t.jaw_y - 0.15
    flare_y = t.chin_y + 0.3
    poly = np.array(
        [
            (-half, top),
            (half, top),
            (half + 0.01, flare_y),
            (half + 0.3, 1.7),
            (-half - 0.3, 1.7),
            (-half - 0.01, flare_y),
        ]
    )
    alpha = np.zeros(frame.shape, np.float32)
    union(alpha, polygon_patch(frame.px(poly), frame.shape, blur=0.5))
    hn = np.sqrt(np.clip(1.0 - (X / np.float32(half + 0.02)) ** 2, 0.0, None)) * np.float32(0.22 * frame.scale)
    gx = np.gradient(hn, axis=1)
    inv = 1.0 / np.sqrt(gx * gx + 1.0)
    lx, ly, lz = light.direction
    diffuse = np.clip((-gx * inv * np.float32(lx) + inv * np.float32(lz) + 0.3) / 1.3, 0.0, 1.0) * np.float32(
        max(0.3, 1.0 - 0.6 * max(0.0, -ly))
    )
    skin = srgb_to_linear(np.array(app.skin_rgb, np.float32)) * 0.9
    occlusion = 0.6 + 0.4 * smoothstep(t.chin_y, t.chin_y + 0.35, Y)
    shadow = cv2.GaussianBlur(head_silhouette, (0, 0), max(0.7, frame.n(0.015)))
    shift = max(1, round(frame.n(0.025)))
    shadow = np.vstack([np.zeros((shift, frame.shape[1]), np.float32), shadow[:-shift]])
    irradiance = (light.ambient + (1.0 - light.ambient) * diffuse) * light.exposure * occlusion * (1.0 - 0.7 * shadow)
    colour = skin * ((1.0 + 0.04 * mottle) * irradiance)[..., None] * np.asarray(light.rgb, np.float32)
    return colour, alpha
