"""Skin, eyes, brows, nose and mouth: the face as albedo x shading from a height field.

Photo-likeness comes from light, not outlines. The face is a height field (an ellipsoid with compact
bumps for brow ridges, eye sockets, eyeballs, cheeks, nose, lips, chin), lit by one directional light with
wrap-around diffuse (skin scatters light into its shadows) and Blinn specular; colour comes from an
albedo map (skin with mottling and pores, blush, lips, brows, eyes) multiplied in linear light.

Each region's parts are listed once (``*_parts``) as supports: ellipses and polygons in face widths.
The same lists drive the drawing and the ground-truth masks, so a mask covers exactly the places a
feature could have changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from app.synth.frame import Frame, Textures
from app.synth.geometry import Eye, FaceGeometry
from app.synth.paint import (
    Patch,
    add_bump,
    blend,
    ellipse_patch,
    multiply,
    polygon_patch,
    polyline_patch,
    smoothstep,
    srgb_to_linear,
    strand_texture,
    union,
)
from app.synth.params import Appearance, Light


@dataclass(frozen=True)
class Part:
    """A support: an ellipse (center, axes, angle in radians) or a polygon, in face widths."""

    center: tuple[float, float] = (0.0, 0.0)
    axes: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    polygon: np.ndarray | None = field(default=None, compare=False)

    def patch(self, frame: Frame, *, grow: float = 0.0) -> Patch | None:
        """Coverage of the support grown by ``grow`` face widths."""
        if self.polygon is not None:
            patch = polygon_patch(frame.px(self.polygon), frame.shape)
            if patch is None or grow <= 0.0:
                return patch
            radius = max(1, round(frame.n(grow)))
            padded = np.pad(patch.data, radius)
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            grown = cv2.dilate(padded, kernel)
            y0, x0 = patch.y0 - radius, patch.x0 - radius
            cy0, cx0 = max(0, -y0), max(0, -x0)
            h, w = frame.shape
            cy1 = grown.shape[0] - max(0, y0 + grown.shape[0] - h)
            cx1 = grown.shape[1] - max(0, x0 + grown.shape[1] - w)
            return Patch(max(0, y0), max(0, x0), grown[cy0:cy1, cx0:cx1])
        axes = (frame.n(self.axes[0] + grow), frame.n(self.axes[1] + grow))
        return ellipse_patch(frame.px(self.center), axes, frame.shape, angle=self.angle)


def _e(center: np.ndarray | tuple[float, float], axes: tuple[float, float], angle: float = 0.0) -> Part:
    return Part(center=(float(center[0]), float(center[1])), axes=(float(axes[0]), float(axes[1])), angle=angle)


# -- supports of each region's parts (face widths) -----------------------------------------------------


def eye_parts(geom: FaceGeometry) -> list[Part]:
    """Everything of both eyes (fissure, lids, lashes, crease, socket and eyeball bumps, under-eye)."""
    parts = []
    for eye in geom.eyes:
        center, axes = eye.socket()
        parts.append(_e(center, axes))
    return parts


def brow_parts(geom: FaceGeometry) -> list[Part]:
    parts = [Part(polygon=brow.polygon) for brow in geom.brows]
    parts.append(Part(polygon=_glabella_polygon(geom)))
    return parts


def nose_parts(geom: FaceGeometry) -> list[Part]:
    t = geom.t
    tip = _e((0.0, t.nose_y - 0.005), (1.3 * t.nose_tip_radius, 1.2 * t.nose_tip_radius))
    parts = [tip]
    for side in (-1.0, 1.0):
        parts.append(_e(_ala_center(geom, side), _ala_axes(geom)))
        parts.append(_e(*_nostril(geom, side)))
    return parts


def mouth_parts(geom: FaceGeometry) -> list[Part]:
    """Lips, lip bumps, mouth corners and the groove under the lower lip."""
    t, m = geom.t, geom.mouth
    parts = [Part(polygon=m.upper), Part(polygon=m.lower)]
    parts.append(
        _e((0.0, 0.5 * (m.upper_top + t.mouth_y)), (0.95 * t.mouth_half, 0.5 * (t.mouth_y - m.upper_top) + 0.012))
    )
    parts.append(_e((0.0, t.mouth_y + 0.5 * t.lower_lip), (0.85 * t.mouth_half, 0.5 * t.lower_lip + 0.014)))
    parts.append(_e((0.0, m.lower_bottom + 0.03), (0.085, 0.022)))
    for corner in m.corners:
        parts.append(_e(corner, (0.024, 0.018)))
    return parts


def philtrum_parts(geom: FaceGeometry) -> list[Part]:
    """The philtral columns and groove, from the nose to the upper lip's vermilion border."""
    top = geom.subnasale_y
    length = max(0.01, geom.mouth.upper_top - top)
    return [_e((dx, top + 0.5 * length), (0.011, 0.5 * length + 0.006)) for dx in (-0.017, 0.0, 0.017)]


def chin_parts(geom: FaceGeometry) -> list[Part]:
    t = geom.t
    return [_e((0.0, t.chin_y - 0.075), (t.chin_half + 0.06, 0.072))]


def _ala_center(geom: FaceGeometry, side: float) -> tuple[float, float]:
    t = geom.t
    return (side * 0.78 * t.ala_half, t.nose_y + 0.012)


def _ala_axes(geom: FaceGeometry) -> tuple[float, float]:
    t = geom.t
    return (0.042 + 0.35 * (t.ala_half - 0.118), 0.038 + 0.2 * (t.nose_tip_radius - 0.045))


def _nostril(geom: FaceGeometry, side: float) -> tuple[tuple[float, float], tuple[float, float], float]:
    t = geom.t
    center = (side * 0.42 * t.ala_half, t.nose_y + 0.7 * t.nose_tip_radius + 0.006)
    axes = (0.026 * t.nostril_scale, 0.011 * t.nostril_scale)
    return center, axes, -side * 0.33


def _glabella_polygon(geom: FaceGeometry) -> np.ndarray:
    """Where synophrys hair grows: between the brow heads, at brow height."""
    t = geom.t
    y_low = -t.brow_height + 0.004
    y_high = -t.brow_height - 0.85 * t.brow_thickness
    x = t.brow_inner_x + 0.012
    return np.array([(-x, y_low), (-x, y_high), (0.0, y_high + 0.006), (x, y_high), (x, y_low), (0.0, y_low - 0.006)])


# -- rendering -----------------------------------------------------------------------------------------


@dataclass
class FaceImage:
    """The rendered face (skin silhouette) in linear RGB with its alpha."""

    colour: np.ndarray  # (H, W, 3) linear RGB, meaningful where alpha > 0
    alpha: np.ndarray  # (H, W) float32
    silhouette: np.ndarray  # (H, W) coverage of the head outline alone (no ears)


def render_face(
    geom: FaceGeometry,
    base: FaceGeometry,
    app: Appearance,
    light: Light,
    frame: Frame,
    tex: Textures,
    X: np.ndarray,
    Y: np.ndarray,
    hair_shadow: np.ndarray | None,
) -> FaceImage:
    """Draw the face of ``geom``. ``base`` (the unaffected geometry) places what features must not move."""
    shape = frame.shape
    silhouette = np.zeros(shape, np.float32)
    union(silhouette, polygon_patch(frame.px(geom.outline), shape))
    alpha = silhouette.copy()
    for ear in geom.ears:
        union(alpha, polygon_patch(frame.px(ear), shape, blur=0.3))

    height = _height_field(geom, base, frame, X, Y)
    skin = np.asarray(srgb_to_linear(np.array(app.skin_rgb, np.float32)))
    albedo = np.empty((*shape, 3), np.float32)
    mottle = 1.0 + 0.045 * tex.mottle + 0.012 * app.skin_texture * tex.pores
    albedo[:] = skin
    albedo *= mottle[..., None]
    albedo *= 1.0 - tex.spots[..., None] * np.array([0.35, 0.45, 0.5], np.float32)
    gloss = np.full(shape, app.skin_gloss, np.float32) * (1.0 + 0.15 * tex.pores.clip(-1, 2))

    _paint_skin_tones(albedo, gloss, geom, app, frame)
    _paint_ears(albedo, geom, frame)
    _paint_brows(albedo, geom, app, frame, tex)
    catchlights = [_paint_eye(albedo, gloss, eye, app, frame, tex) for eye in geom.eyes]
    _paint_nose(albedo, geom, frame, skin)
    _paint_mouth(albedo, gloss, geom, app, frame, skin)

    colour = shade(albedo, height, gloss, light, app.skin_gloss_power)
    if hair_shadow is not None:
        colour *= (1.0 - 0.4 * hair_shadow)[..., None]
    for patch, strength in catchlights:
        if patch is not None:
            colour[patch.slices] += (strength * patch.data)[..., None] * np.asarray(light.rgb, np.float32)
    return FaceImage(colour=colour, alpha=alpha, silhouette=silhouette)


def shade(albedo: np.ndarray, height: np.ndarray, gloss: np.ndarray, light: Light, power: float) -> np.ndarray:
    """Linear colour = albedo x (ambient + wrapped Lambert) x light + Blinn specular; skin reddens in shade."""
    gy, gx = np.gradient(height)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny, nz = -gx * inv, -gy * inv, inv
    lx, ly, lz = (np.float32(v) for v in light.direction)
    ndl = nx * lx + ny * ly + nz * lz
    diffuse = np.clip((ndl + light.wrap) / (1.0 + light.wrap), 0.0, 1.0)
    hx, hy, hz = lx, ly, lz + 1.0
    hn = np.float32(1.0 / math.sqrt(hx * hx + hy * hy + hz * hz))
    ndh = np.clip((nx * hx + ny * hy + nz * hz) * hn, 0.0, 1.0)
    spec = gloss * ndh ** np.float32(power)
    irradiance = (light.ambient + (1.0 - light.ambient) * diffuse) * light.exposure
    out = albedo * irradiance[..., None]
    # Subsurface scattering tints skin shadows red; a cheap nod to it keeps dark sides from looking grey.
    shadow = (1.0 - diffuse)[..., None] * np.array([0.10, -0.03, -0.06], np.float32)
    out *= 1.0 + shadow
    out *= np.asarray(light.rgb, np.float32)
    out += (spec * light.exposure)[..., None] * np.asarray(light.rgb, np.float32)
    return out


def _height_field(geom: FaceGeometry, base: FaceGeometry, frame: Frame, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Surface height in pixels. Bumps tied to a feature use ``geom``; the rest use ``base``."""
    s = frame.scale
    u = X / np.float32(0.6)
    v = (Y + np.float32(0.08)) / np.float32(1.0)
    height = (np.float32(0.5 * s) * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))).astype(np.float32)
    t, bt = geom.t, base.t
    px, n = frame.px, frame.n

    def bump(
        center: tuple[float, float] | np.ndarray, axes: tuple[float, float], amp: float, angle: float = 0.0
    ) -> None:
        add_bump(height, px(center), (n(axes[0]), n(axes[1])), n(amp), angle=angle)

    # Fixed anatomy (no feature moves it).
    for side in (-1.0, 1.0):
        bump((side * 0.24, -0.1), (0.17, 0.07), 0.014)  # brow ridge
        bump((side * 0.28, 0.2), (0.17, 0.14), 0.028 * bt.cheek_fullness)  # cheek
        bump((side * 0.42, -0.3), (0.1, 0.18), -0.012)  # temple
    bump((0.0, -0.42), (0.35, 0.25), 0.02)  # forehead
    bump((0.0, 0.5 * bt.nose_y), (bt.bridge_half, 0.55 * bt.nose_y), 0.035)  # nasal bridge
    # Eyes.
    for eye in geom.eyes:
        center, axes = eye.socket()
        bump(center + np.array([0.0, 0.002]), (axes[0] - 0.014, axes[1] - 0.02), -0.03)
        bump(eye.iris_center, (0.55 * eye.width, 0.5 * eye.height + 0.012), 0.012)
    # Nose.
    bump(
        (0.0, t.nose_y - 0.005),
        (1.3 * t.nose_tip_radius, 1.2 * t.nose_tip_radius),
        0.045 + 0.6 * (t.nose_tip_radius - 0.045),
    )
    for side in (-1.0, 1.0):
        bump(_ala_center(geom, side), _ala_axes(geom), 0.022)
    # Mouth and philtrum.
    m = geom.mouth
    bump((0.0, 0.5 * (m.upper_top + t.mouth_y)), (0.95 * t.mouth_half, 0.5 * (t.mouth_y - m.upper_top) + 0.012), 0.012)
    bump((0.0, t.mouth_y + 0.5 * t.lower_lip), (0.85 * t.mouth_half, 0.5 * t.lower_lip + 0.014), 0.016)
    bump((0.0, m.lower_bottom + 0.03), (0.085, 0.022), -0.008)
    top = geom.subnasale_y
    length = max(0.01, m.upper_top - top)
    for dx, amp in ((-0.017, 0.004), (0.0, -0.002), (0.017, 0.004)):
        bump((dx, top + 0.5 * length), (0.011, 0.5 * length + 0.006), amp)
    # Chin.
    bump((0.0, t.chin_y - 0.075), (t.chin_half + 0.06, 0.072), 0.03 * t.chin_prominence)
    # Ears: a rim.
    for side in (-1.0, 1.0):
        bump((side * 0.535, t.ear_y), (0.06 * t.ear_size, 0.14 * t.ear_size), 0.03)
    return height


def _paint_skin_tones(albedo: np.ndarray, gloss: np.ndarray, geom: FaceGeometry, app: Appearance, frame: Frame) -> None:
    """Blush on the cheeks, a redder nose tip, an oilier T-zone."""
    shape, n = frame.shape, frame.n
    blush = 1.0 + app.blush * np.array([0.12, -0.03, -0.03])
    for side in (-1.0, 1.0):
        multiply(albedo, ellipse_patch(frame.px((side * 0.27, 0.2)), (n(0.1), n(0.07)), shape, blur=n(0.03)), blush)
    t = geom.t
    multiply(
        albedo,
        ellipse_patch(
            frame.px((0.0, t.nose_y)), (n(0.9 * t.nose_tip_radius), n(0.8 * t.nose_tip_radius)), shape, blur=n(0.01)
        ),
        1.0 + 0.6 * app.blush * np.array([0.08, -0.02, -0.02]),
    )
    tzone = ellipse_patch(frame.px((0.0, -0.25)), (n(0.2), n(0.14)), shape, blur=n(0.04))
    if tzone is not None:
        gloss[tzone.slices] *= 1.0 + 0.6 * tzone.data


def _paint_ears(albedo: np.ndarray, geom: FaceGeometry, frame: Frame) -> None:
    t, n = geom.t, frame.n
    for side in (-1.0, 1.0):
        concha = ellipse_patch(
            frame.px((side * 0.525, t.ear_y + 0.01)),
            (n(0.022 * t.ear_size), n(0.06 * t.ear_size)),
            frame.shape,
            blur=n(0.008),
        )
        multiply(albedo, concha, np.array([0.62, 0.55, 0.55]))


def _paint_brows(albedo: np.ndarray, geom: FaceGeometry, app: Appearance, frame: Frame, tex: Textures) -> None:
    colour = srgb_to_linear(np.array(app.brow_rgb, np.float32))
    soft = max(0.4, frame.n(0.004))
    for brow in geom.brows:
        patch = polygon_patch(frame.px(brow.polygon), frame.shape, blur=soft)
        if patch is not None:
            hair = np.clip(0.8 + 0.35 * tex.brow_hair[patch.slices], 0.0, 1.0)
            blend(albedo, Patch(patch.y0, patch.x0, patch.data * hair), colour, 0.95)
    density = geom.t.glabella_density
    if density > 0.0:
        patch = polygon_patch(frame.px(_glabella_polygon(geom)), frame.shape, blur=max(0.5, frame.n(0.005)))
        if patch is not None:
            hair = np.clip(0.7 + 0.4 * tex.brow_hair[patch.slices], 0.0, 1.0)
            blend(albedo, Patch(patch.y0, patch.x0, patch.data * hair), colour, min(1.0, density) * 0.95)


def _paint_eye(
    albedo: np.ndarray, gloss: np.ndarray, eye: Eye, app: Appearance, frame: Frame, tex: Textures
) -> tuple[Patch | None, float]:
    """Sclera, iris, pupil, lid shadow, lashes, crease, caruncle; returns the catchlight to add after shading."""
    shape, n = frame.shape, frame.n
    opening = polygon_patch(frame.px(eye.opening), shape, blur=0.35)
    if opening is None:
        return None, 0.0
    xs, ys = opening.grid()
    c = frame.px(eye.center)
    ic = frame.px(eye.iris_center)
    w, h = n(eye.width), n(eye.height)
    dx, dy = xs - np.float32(c[0]), ys - np.float32(c[1])
    a = dx * np.float32(eye.u[0]) + dy * np.float32(eye.u[1])
    b = dx * np.float32(eye.v[0]) + dy * np.float32(eye.v[1])
    s = np.clip(a / np.float32(w) + 0.5, 0.0, 1.0)
    lid = -0.62 * h * np.sin(np.pi * s**0.8)
    below_lid = np.clip(b - lid, 0.0, None)
    corner = np.clip((2.0 * a / np.float32(w)) ** 2, 0.0, 1.0)

    sclera = srgb_to_linear(np.array([0.93, 0.9, 0.88], np.float32))
    pink = srgb_to_linear(np.array([0.85, 0.55, 0.52], np.float32))
    colour = sclera + (0.35 * corner)[..., None] * (pink - sclera)
    colour *= (1.0 - 0.3 * corner)[..., None]

    r_i = np.float32(n(eye.iris_radius))
    di = np.hypot(xs - np.float32(ic[0]), ys - np.float32(ic[1]))
    angle = np.arctan2(ys - np.float32(ic[1]), xs - np.float32(ic[0]))
    fibres = strand_texture(np.random.default_rng(tex.iris_seed), angle * np.float32(40.0), 1.0, n=512)
    iris = srgb_to_linear(np.array(app.iris_rgb, np.float32))
    radial = di / r_i
    iris_col = (
        iris * ((0.5 + 0.9 * fibres) * (1.0 - 0.6 * smoothstep(0.75, 1.0, radial)) * (0.8 + 0.35 * radial))[..., None]
    )
    iris_alpha = smoothstep(float(r_i) + 0.6, float(r_i) - 0.6, di)
    colour += iris_alpha[..., None] * (iris_col - colour)
    r_p = np.float32(app.pupil_ratio) * r_i
    pupil_alpha = smoothstep(float(r_p) + 0.5, float(r_p) - 0.5, di)
    colour += pupil_alpha[..., None] * (np.float32(0.004) - colour)
    colour *= (1.0 - 0.55 * np.exp(-below_lid / np.float32(max(0.5, 0.25 * h))))[..., None]
    blend(albedo, opening, colour)
    gloss[opening.slices] *= 1.0 - opening.data

    lash = srgb_to_linear(np.array(app.brow_rgb, np.float32)) * 0.25
    upper_px, lower_px = frame.px(eye.upper), frame.px(eye.lower)
    blend(albedo, polyline_patch(upper_px, shape, max(1.0, n(0.007)), blur=0.45), lash, 0.9)
    blend(albedo, polyline_patch(upper_px[9:], shape, max(1.0, n(0.013)), blur=0.6), lash, 0.85)
    multiply(albedo, polyline_patch(lower_px[2:-1], shape, max(1.0, n(0.004)), blur=0.5), 0.7)
    multiply(
        albedo, polyline_patch(frame.px(eye.crease[2:-2]), shape, max(1.0, n(0.006)), blur=max(0.5, n(0.006))), 0.72
    )
    inner = eye.center - 0.5 * eye.width * eye.u + 0.012 * eye.u
    blend(
        albedo,
        ellipse_patch(frame.px(inner), (n(0.011), n(0.009)), shape, blur=0.5),
        srgb_to_linear(np.array([0.8, 0.45, 0.45], np.float32)),
        0.8,
    )
    under = eye.center + np.array([0.0, 0.04])
    multiply(
        albedo, ellipse_patch(frame.px(under), (n(0.075), n(0.022)), shape, blur=n(0.008)), np.array([0.88, 0.86, 0.88])
    )

    catch = ic + np.array([-0.35, -0.45]) * float(r_i)
    glint = ellipse_patch(catch, (max(0.7, 0.2 * float(r_i)), max(0.7, 0.2 * float(r_i))), shape, blur=0.5)
    if glint is not None:
        region = opening_cover(opening, glint)
        glint = Patch(glint.y0, glint.x0, glint.data * region)
    return glint, 0.55


def opening_cover(opening: Patch, other: Patch) -> np.ndarray:
    """``opening``'s coverage on ``other``'s pixels (0 outside the opening)."""
    out = np.zeros_like(other.data)
    oy0, ox0 = opening.y0, opening.x0
    oh, ow = opening.data.shape
    y0, x0 = max(oy0, other.y0), max(ox0, other.x0)
    y1 = min(oy0 + oh, other.y0 + other.data.shape[0])
    x1 = min(ox0 + ow, other.x0 + other.data.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - other.y0 : y1 - other.y0, x0 - other.x0 : x1 - other.x0] = opening.data[
            y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0
        ]
    return out


def _paint_nose(albedo: np.ndarray, geom: FaceGeometry, frame: Frame, skin: np.ndarray) -> None:
    shape, n = frame.shape, frame.n
    for side in (-1.0, 1.0):
        center, axes, angle = _nostril(geom, side)
        blend(
            albedo,
            ellipse_patch(frame.px(center), (n(axes[0]), n(axes[1])), shape, angle=angle, blur=max(0.5, n(0.005))),
            skin * 0.22,
            0.8,
        )
        ac, aa = np.array(_ala_center(geom, side)), _ala_axes(geom)
        arc = np.linspace(-1.9, 0.9, 16) if side > 0 else np.pi - np.linspace(-1.9, 0.9, 16)
        curve = ac + 0.85 * np.column_stack([aa[0] * np.cos(arc), aa[1] * np.sin(arc)])
        multiply(albedo, polyline_patch(frame.px(curve), shape, max(1.0, n(0.005)), blur=max(0.5, n(0.005))), 0.86)


def _paint_mouth(
    albedo: np.ndarray, gloss: np.ndarray, geom: FaceGeometry, app: Appearance, frame: Frame, skin: np.ndarray
) -> None:
    shape, n = frame.shape, frame.n
    m = geom.mouth
    lip = srgb_to_linear(np.array(app.lip_rgb, np.float32))
    soft = max(0.45, n(0.0035))
    upper = polygon_patch(frame.px(m.upper), shape, blur=soft)
    lower = polygon_patch(frame.px(m.lower), shape, blur=soft)
    blend(albedo, upper, lip * 0.86, 0.95)
    blend(albedo, lower, lip, 0.95)
    for patch in (upper, lower):
        if patch is not None:
            gloss[patch.slices] *= 1.0 + 0.6 * patch.data
    blend(
        albedo,
        polyline_patch(frame.px(m.stomion[2:-2]), shape, max(1.0, n(0.006)), blur=max(0.5, n(0.003))),
        skin * 0.15,
        0.85,
    )
    for corner in m.corners:
        multiply(albedo, ellipse_patch(frame.px(corner), (n(0.012), n(0.008)), shape, blur=max(0.5, n(0.003))), 0.62)
