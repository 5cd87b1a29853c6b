"""Facial geometry from traits: outlines, eye and lip contours, landmark positions.

All coordinates are in face widths, origin between the eye centres, y down (see :mod:`app.synth.params`).
The renderer turns them into pixels; the ground-truth landmarks are read off the same geometry, so they
cannot drift from what is drawn.

Landmarks follow YuNet/ArcFace order and definitions: image-left eye centre (the subject's right eye),
image-right eye centre, nose tip, image-left mouth corner, image-right mouth corner. An "eye centre" is
the centre of the iris, which is where YuNet puts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.synth.params import Traits

SIDES = (-1.0, 1.0)  # image-left, image-right


def chaikin(points: np.ndarray, *, iterations: int) -> np.ndarray:
    """Chaikin's corner cutting of a closed polygon: converges to a quadratic B-spline inside it."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
    return pts


@dataclass(frozen=True)
class Eye:
    """One eye: fissure contour, iris, and the frame the lids are drawn in."""

    side: float
    center: np.ndarray  # fissure midpoint
    iris_center: np.ndarray  # the landmark
    iris_radius: float
    u: np.ndarray  # unit vector from inner to outer canthus
    v: np.ndarray  # unit vector "down" across the fissure
    width: float
    height: float
    upper: np.ndarray  # upper lid curve, inner -> outer
    lower: np.ndarray  # lower lid curve, inner -> outer
    crease: np.ndarray  # upper lid crease

    @property
    def opening(self) -> np.ndarray:
        """Closed polygon of the visible eyeball."""
        return np.vstack([self.upper, self.lower[::-1]])

    def socket(self) -> tuple[np.ndarray, tuple[float, float]]:
        """Centre and semi-axes of the periorbital area everything of this eye is drawn within."""
        return self.center + np.array([0.0, -0.012]), (0.6 * self.width + 0.012, 0.45 * self.width + 0.012)


@dataclass(frozen=True)
class Brow:
    side: float
    polygon: np.ndarray
    head: np.ndarray  # medial end, centre
    axis_angle: float  # mean direction of the brow, radians (for the hair texture)


@dataclass(frozen=True)
class Mouth:
    corners: np.ndarray  # (2, 2): image-left, image-right
    stomion: np.ndarray  # curve between the lips, left -> right
    upper: np.ndarray  # upper vermilion polygon
    lower: np.ndarray  # lower vermilion polygon
    upper_top: float  # y of the upper vermilion border at the midline
    lower_bottom: float  # y of the lower vermilion border at the midline


class FaceGeometry:
    """Every contour of one face, derived from its traits."""

    def __init__(self, traits: Traits) -> None:
        self.t = traits
        self.eyes = tuple(self._eye(side) for side in SIDES)
        self.brows = tuple(self._brow(side) for side in SIDES)
        self.mouth = self._mouth()
        self.outline = self._outline()
        self.ears = tuple(self._ear(side) for side in SIDES)
        self.nose_tip = np.array([0.0, traits.nose_y])
        self.subnasale_y = traits.nose_y + 0.055

    # -- landmarks -----------------------------------------------------------------------------------
    def landmarks(self) -> np.ndarray:
        """(5, 2) landmarks in face widths, YuNet order."""
        return np.array(
            [
                self.eyes[0].iris_center,
                self.eyes[1].iris_center,
                self.nose_tip,
                self.mouth.corners[0],
                self.mouth.corners[1],
            ]
        )

    # -- parts ---------------------------------------------------------------------------------------
    def _eye(self, side: float) -> Eye:
        t = self.t
        theta = math.radians(t.eye_slant_deg)
        u = np.array([side * math.cos(theta), -math.sin(theta)])
        v = np.array([side * math.sin(theta), math.cos(theta)])
        center = np.array([side * t.eye_half_distance, 0.0])
        width, height = t.eye_width, t.eye_opening * t.eye_width
        s = np.linspace(0.0, 1.0, 24)
        along = (s - 0.5) * width
        # Upper lid peaks medially, lower lid laterally: the almond shape of a real palpebral fissure.
        up = -0.62 * height * np.sin(np.pi * s**0.8)
        low = 0.38 * height * np.sin(np.pi * s**1.16)
        crease_up = up - 0.28 * height - 0.06 * height * np.sin(np.pi * s)
        upper = center + along[:, None] * u + up[:, None] * v
        lower = center + along[:, None] * u + low[:, None] * v
        crease = center + (along[:, None] * 1.02) * u + crease_up[:, None] * v
        iris_center = center - 0.1 * height * v
        return Eye(
            side=side,
            center=center,
            iris_center=iris_center,
            iris_radius=t.iris_ratio * width,
            u=u,
            v=v,
            width=width,
            height=height,
            upper=upper,
            lower=lower,
            crease=crease,
        )

    def _brow(self, side: float) -> Brow:
        t = self.t
        s = np.linspace(0.0, 1.0, 20)
        x = side * (t.brow_inner_x + s * t.brow_length)
        lower = -t.brow_height - t.brow_arch * np.sin(np.pi * s**0.75) + 0.012 * s**3
        thickness = t.brow_thickness * (1.0 - 0.62 * s**1.4)
        upper = lower - thickness
        # Slightly rounded head: the first point of the upper edge is pulled down.
        upper[0] += 0.3 * thickness[0]
        polygon = np.vstack([np.column_stack([x, lower]), np.column_stack([x, upper])[::-1]])
        head = np.array([side * t.brow_inner_x, lower[0] - 0.5 * thickness[0]])
        angle = math.atan2(-t.brow_arch, t.brow_length)
        return Brow(side=side, polygon=polygon, head=head, axis_angle=angle)

    def _mouth(self) -> Mouth:
        t = self.t
        half = t.mouth_half
        x = np.linspace(-half, half, 41)
        r = np.abs(x) / half
        stomion_y = t.mouth_y + t.corner_droop * r**2.2 + 0.004 * np.exp(-((x / 0.03) ** 2))
        bow = 1.0 - 0.22 * np.exp(-((x / 0.018) ** 2)) + 0.12 * np.exp(-(((np.abs(x) - 0.045) / 0.025) ** 2))
        upper_edge = stomion_y - t.upper_lip * np.clip(1.0 - r**2.4, 0.0, None) ** 0.55 * bow
        lower_edge = stomion_y + t.lower_lip * np.clip(1.0 - r**2.0, 0.0, None) ** 0.7
        stomion = np.column_stack([x, stomion_y])
        upper = np.vstack([np.column_stack([x, upper_edge]), stomion[::-1]])
        lower = np.vstack([stomion, np.column_stack([x, lower_edge])[::-1]])
        corners = np.array([[-half, stomion_y[0]], [half, stomion_y[-1]]])
        return Mouth(
            corners=corners,
            stomion=stomion,
            upper=upper,
            lower=lower,
            upper_top=float(upper_edge[len(x) // 2]),
            lower_bottom=float(lower_edge[len(x) // 2]),
        )

    def _outline(self) -> np.ndarray:
        """Closed head silhouette (cranium, cheeks, jaw, chin), clockwise on screen from the vertex.

        A control polygon rounded by Chaikin corner cutting: smooth, and unlike an interpolating
        spline it never overshoots, so a narrow jaw cannot bulge out below the cheeks.
        """
        t = self.t
        top = -0.28 - t.cranium_top  # vertical semi-axis of the cranium
        angles = np.linspace(-0.5 * np.pi, 0.0, 6)[:-1]
        cranium = [(t.cranium_half * np.cos(a), -0.28 + top * np.sin(a)) for a in angles]
        right = [
            *cranium,
            (t.cranium_half, -0.28),
            (0.5, 0.0),
            (0.5, 0.2),
            (t.jaw_half + 0.01, t.jaw_y),
            (t.chin_half + 0.015, t.chin_y - 0.02),
            (0.45 * t.chin_half, t.chin_y + 0.012),
        ]
        left = [(-x, y) for x, y in reversed(right[1:])]
        control = np.array([*right, *left])
        return chaikin(control, iterations=4)

    def _ear(self, side: float) -> np.ndarray:
        t = self.t
        a = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
        half_w, half_h = 0.045 * t.ear_size, 0.12 * t.ear_size
        # Wider at the top (helix) than at the lobe, leaning a little outward at the top.
        x = half_w * np.cos(a) * (1.0 - 0.2 * np.sin(a))
        y = half_h * np.sin(a)
        x = side * (0.485 + 0.7 * half_w + x - 0.015 * (y / half_h))
        return np.column_stack([x, t.ear_y + y])
