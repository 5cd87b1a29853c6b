"""The photo around the head: backdrop, pose (roll, yaw, position), clothing, lighting falloff, camera.

Pose is applied by resampling the upright head canvas once, through a map that combines a small yaw and
the in-plane placement. Yaw is approximated by shifting every point sideways in proportion to its depth
on a smooth head-shaped surface (the nose tip moves more than the cheeks, the far cheek is compressed):
the parallax of a turned head without a 3-D renderer. The depth surface is built from the *unaffected*
geometry, so the same pixels move the same way whether a feature is on or off, and landmarks are
carried through exactly the same map as the pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from app.synth.frame import Frame
from app.synth.geometry import chaikin
from app.synth.paint import polygon_patch, smooth_noise, srgb_to_linear
from app.synth.params import Background, Scene, Traits


@dataclass(frozen=True)
class Pose:
    """Local head canvas -> photo: yaw parallax, then rotation about the eye midpoint and translation."""

    frame: Frame
    matrix: np.ndarray  # 2x3, local (after yaw) -> photo
    inverse: np.ndarray  # 2x3, photo -> local (after yaw)
    yaw_sin: float
    yaw_cos: float
    nose_y: float

    def _dx(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sideways shift (local px) of the point that lands at (x, y) after the yaw."""
        f = self.frame
        xn = (x - f.origin[0]) / f.scale
        yn = (y - f.origin[1]) / f.scale
        depth = 0.5 * np.clip(1.0 - (xn / 0.62) ** 2 - ((yn + 0.08) / 1.05) ** 2, 0.0, None)
        r2 = (xn / 0.1) ** 2 + ((yn - 0.6 * self.nose_y) / 0.25) ** 2
        depth = depth + 0.1 * np.clip(1.0 - r2, 0.0, None) ** 2
        return f.scale * (self.yaw_sin * depth + (self.yaw_cos - 1.0) * xn)

    def forward(self, points: np.ndarray) -> np.ndarray:
        """Local canvas points -> photo pixels (fixed-point inversion of the yaw map: its slope is < 1)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x, y = pts[:, 0], pts[:, 1]
        turned = x.copy()
        for _ in range(30):
            turned = x + self._dx(turned, y)
        local = np.column_stack([turned, y])
        return local @ self.matrix[:, :2].T + self.matrix[:, 2]

    def maps(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps for the photo box (y0, x0, y1, x1): where each photo pixel reads the canvas."""
        y0, x0, y1, x1 = box
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        m = self.inverse
        lx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        ly = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        lx = lx - self._dx(lx, ly)
        return lx.astype(np.float32), ly.astype(np.float32)

    def box(self, canvas: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """Photo pixels the head canvas can reach, clipped to the photo (width, height)."""
        h, w = self.frame.shape
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
        placed = corners @ self.matrix[:, :2].T + self.matrix[:, 2]
        pad = 0.1 * self.frame.scale
        x0 = max(0, int(placed[:, 0].min() - pad))
        y0 = max(0, int(placed[:, 1].min() - pad))
        x1 = min(canvas[0], int(placed[:, 0].max() + pad) + 1)
        y1 = min(canvas[1], int(placed[:, 1].max() + pad) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        return y0, x0, y1, x1


def make_pose(scene: Scene, frame: Frame, traits: Traits) -> Pose:
    angle = math.radians(scene.roll_deg)
    c, s = math.cos(angle), math.sin(angle)
    ox, oy = frame.origin
    cx, cy = scene.center
    # Counter-clockwise on screen (y down), as cv2.getRotationMatrix2D, about the eye midpoint.
    matrix = np.array([[c, s, cx - c * ox - s * oy], [-s, c, cy + s * ox - c * oy]])
    linear_inv = np.linalg.inv(matrix[:, :2])
    inverse = np.hstack([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]])
    yaw = math.radians(scene.yaw_deg)
    return Pose(
        frame=frame, matrix=matrix, inverse=inverse, yaw_sin=math.sin(yaw), yaw_cos=math.cos(yaw), nose_y=traits.nose_y
    )


def place(layer: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Resample a canvas-sized layer (any channel count) into the photo box the maps were made for."""
    return cv2.remap(
        layer, maps[0], maps[1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def background(bg: Background, canvas: tuple[int, int], face_center: tuple[float, float]) -> np.ndarray:
    """The backdrop, sRGB float32 (H, W, 3).

    Everything in a backdrop is smooth (walls, gradients, out-of-focus lights), so it is computed at a
    quarter of the resolution and upsampled; the camera adds the fine grain.
    """
    width, height = canvas
    f = 4
    w, h = -(-width // f), -(-height // f)
    rng = np.random.default_rng(bg.seed)
    a = np.array(bg.rgb_a, np.float32)
    b = np.array(bg.rgb_b, np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) * f
    diag = math.hypot(width, height)
    angle = math.radians(bg.angle)
    linear = ((xs - width / 2) * math.cos(angle) + (ys - height / 2) * math.sin(angle)) / diag + 0.5
    grain = smooth_noise(rng, (h, w), max(2.0, bg.scale * diag / f))
    detail = smooth_noise(rng, (h, w), max(1.5, 0.25 * bg.scale * diag / f))
    if bg.kind == "flat":
        t = np.full((h, w), 0.0, np.float32)
        detail = grain
    elif bg.kind == "gradient":
        t = np.clip(linear, 0.0, 1.0)
    elif bg.kind == "radial":
        r = np.hypot(xs - face_center[0], ys - face_center[1]) / (0.7 * diag)
        t = np.clip(r, 0.0, 1.0)
    elif bg.kind == "texture":
        # A mottled wall, kept low in contrast: a high-contrast blotchy texture grows faces of its own
        # (YuNet found one, at 0.72, in a marbled backdrop).
        t = np.clip(0.5 + 0.12 * grain + 0.05 * detail, 0.0, 1.0)
    else:  # bokeh: a gradient with out-of-focus light discs
        t = np.clip(linear, 0.0, 1.0)
    out = a + t[..., None] * (b - a)
    if bg.kind == "interior":
        out = _interior(out, rng, (w, h), b, blur=float(rng.uniform(0.004, 0.02)) * diag / f)
    if bg.kind == "bokeh":
        overlay = np.zeros((h, w, 3), np.float32)
        weight = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(6, 18))):
            centre = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
            radius = float(rng.uniform(0.03, 0.12) * diag / f)
            colour = np.clip(b + rng.normal(0.0, 0.25, 3).astype(np.float32), 0.0, 1.0)
            disc = np.zeros((h, w), np.uint8)
            cv2.circle(disc, (round(centre[0]), round(centre[1])), max(1, round(radius)), 255, -1, lineType=cv2.LINE_AA)
            strength = float(rng.uniform(0.2, 0.6)) * disc.astype(np.float32) / 255.0
            overlay += strength[..., None] * colour
            weight += strength
        overlay = cv2.GaussianBlur(overlay, (0, 0), 0.02 * diag / f)
        weight = cv2.GaussianBlur(weight, (0, 0), 0.02 * diag / f)
        keep = np.clip(1.0 - weight, 0.0, 1.0)[..., None]
        out = out * keep + overlay
    out = out * (1.0 + 0.015 * detail)[..., None]
    return cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)


def _interior(
    wall: np.ndarray, rng: np.random.Generator, size: tuple[int, int], accent: np.ndarray, blur: float
) -> np.ndarray:
    """A room behind the sitter: out-of-focus door frames, pictures and furniture as soft rectangles."""
    w, h = size
    out = wall.copy()
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.7) * h
        shade = float(rng.uniform(0.5, 1.3))
        colour = np.clip(accent * shade + rng.normal(0.0, 0.08, 3).astype(np.float32), 0.0, 1.0)
        out[max(0, int(y0)) : max(0, int(y1)), max(0, int(x0)) : max(0, int(x1))] = colour
    return cv2.GaussianBlur(out, (0, 0), max(0.8, blur))


def draw_clothing(photo: np.ndarray, scene: Scene, neck_base: np.ndarray) -> None:
    """Shoulders and neckline, level in the photo (people tilt their heads, not their shoulders)."""
    w = scene.face_px
    side = [(-2.2, 3.0), (-1.9, 1.0), (-1.55, 0.45), (-1.25, 0.22), (-0.8, 0.1), (-0.44, 0.03)]
    necklines = {
        "round": [(-0.32, 0.0), (-0.22, 0.09), (0.0, 0.13), (0.22, 0.09), (0.32, 0.0)],
        "v": [(-0.3, -0.02), (0.0, 0.34), (0.3, -0.02)],
        "collar": [(-0.34, -0.05), (-0.14, 0.17), (0.0, 0.1), (0.14, 0.17), (0.34, -0.05)],
    }
    # The bottom corners lie far below the photo, so rounding never shows them.
    outline = np.array(
        [*side, *necklines[scene.neckline], *[(-x, y) for x, y in reversed(side)], (2.2, 12.0), (-2.2, 12.0)]
    )
    # Rounded shoulders; the neckline's corners soften a little too.
    shape_pts = chaikin(outline, iterations=3)
    angle = math.radians(scene.shoulder_tilt)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = (shape_pts * w) @ rot.T + neck_base
    height, width = photo.shape[:2]
    patch = polygon_patch(points, (height, width), blur=0.6)
    if patch is None:
        return
    ys = patch.grid()[1]
    lit = 0.78 + 0.3 * np.clip(1.0 - (ys - neck_base[1]) / (1.5 * w), 0.0, 1.0)
    folds = smooth_noise(np.random.default_rng(scene.noise_seed + 1), patch.data.shape, max(4.0, 0.15 * w))
    base = srgb_to_linear(np.array(scene.clothing_rgb, np.float32)) * scene.light.exposure
    colour = base * (lit * (1.0 + 0.08 * folds))[..., None] * np.asarray(scene.light.rgb, np.float32)
    colour = np.power(np.clip(colour, 0.0, None), 1.0 / 2.2)
    region = photo[patch.slices]
    region += patch.data[..., None] * (colour - region)


def lighting_falloff(photo: np.ndarray, scene: Scene) -> None:
    """Uneven illumination across the frame and lens vignetting, in place."""
    height, width = photo.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = math.radians(scene.gradient_angle)
    diag = math.hypot(width, height)
    ramp = ((xs - width / 2) * math.cos(angle) + (ys - height / 2) * math.sin(angle)) / (0.5 * diag)
    r2 = ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) / (0.5 * diag) ** 2
    photo *= ((1.0 + scene.gradient_strength * ramp) * (1.0 - scene.vignette * r2))[..., None]


def camera(photo: np.ndarray, scene: Scene) -> np.ndarray:
    """Lens blur, sensor noise and 8-bit quantisation; returns uint8 RGB."""
    out = cv2.GaussianBlur(photo, (0, 0), scene.blur_sigma)
    rng = np.random.default_rng(scene.noise_seed)
    height, width = out.shape[:2]
    luma = rng.standard_normal((height, width), dtype=np.float32) * np.float32(scene.noise_sigma / 255.0)
    chroma = rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(scene.chroma_noise / 255.0)
    out = out + luma[..., None] + chroma
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG at ``quality`` (Pillow's encoder is deterministic for fixed input and settings)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()
