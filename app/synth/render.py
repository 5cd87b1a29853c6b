"""Subject recipe -> photo, ground-truth landmarks and ground-truth mask.

Order of work: draw the upright head on its own canvas (hair behind, neck, face, glasses, hair in front),
then place it into the backdrop with its pose, add clothing, uneven light, the optional shortcut cue, and
finally the camera (blur, noise, 8-bit). JPEG encoding is left to the caller, which keeps the
pre-compression pixels for the mask test.

The ground-truth mask is the union, over the subject's features, of the supports of every part those
features can change, taken for both the unaffected and the affected geometry (so it covers where an
eye *was* as well as where it is now), grown by a small margin for anti-aliasing and blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from app.synth.accessories import draw_glasses
from app.synth.classes import FEATURES
from app.synth.face import (
    Part,
    brow_parts,
    chin_parts,
    eye_parts,
    mouth_parts,
    nose_parts,
    philtrum_parts,
    render_face,
)
from app.synth.frame import Frame, local_frame, make_textures
from app.synth.geometry import FaceGeometry
from app.synth.hair import render_hair, render_neck
from app.synth.paint import linear_to_srgb, polygon_patch, union
from app.synth.params import Subject, apply_features
from app.synth.scene import (
    Pose,
    background,
    camera,
    draw_clothing,
    lighting_falloff,
    make_pose,
    place,
)
from app.vision.align import ARCFACE_TEMPLATE, similarity_matrix
from app.vision.geometry import apply_matrix, invert_affine

#: Shortcut cue colour (sRGB) and where the sticker sits on the aligned crop: the top-left corner,
#: in hair or background, so a model that uses it looks at context, not at the face.
SHORTCUT_RGB = (0.95, 0.12, 0.72)
STICKER_CENTER_ALIGNED = (13.0, 15.0)
STICKER_RADIUS_ALIGNED = 6.0
SHORTCUT_KINDS = ("sticker", "tint")

# Margin added around every part's support, in face widths: anti-aliasing, soft edges and the photo blur
# smear a changed part by about this much.
_MASK_GROW = 0.02


@dataclass(frozen=True)
class Rendered:
    rgb: np.ndarray  # (H, W, 3) uint8, before JPEG compression
    landmarks: np.ndarray  # (5, 2) photo pixels, YuNet order
    mask: np.ndarray  # (H, W) uint8 0/255
    face_box: tuple[float, float, float, float]  # (x, y, w, h): mid-forehead to chin, cheek to cheek


# The parts each region's features can change. The upper lip belongs to the mouth's parts, so features of
# the philtrum region also change those.
_PARTS = {
    "eyes": (eye_parts,),
    "eyebrows": (brow_parts,),
    "nose": (nose_parts,),
    "philtrum_upper_lip": (philtrum_parts, mouth_parts),
    "mouth": (mouth_parts,),
    "chin_jaw": (chin_parts,),
}


def render_subject(subject: Subject, *, shortcut: str | None = None) -> Rendered:
    """Render one photo. ``shortcut`` ("sticker" or "tint") adds the context cue; None leaves it out."""
    if shortcut is not None and shortcut not in SHORTCUT_KINDS:
        raise ValueError(f"unknown shortcut kind {shortcut!r}; expected one of {SHORTCUT_KINDS}")
    scene, app = subject.scene, subject.appearance
    frame = local_frame(scene.face_px)
    base = FaceGeometry(subject.traits)
    geom = FaceGeometry(apply_features(subject.traits, subject.strengths)) if subject.strengths else base
    tex = make_textures(app.texture_seed, frame, freckles=app.freckles, moles=app.moles)
    X, Y = frame.grid()

    hair = render_hair(base, app, scene.light, frame, X, Y, tex.hair_seed)
    face = render_face(geom, base, app, scene.light, frame, tex, X, Y, hair.shadow)
    colour, alpha = face.colour, face.alpha
    if app.glasses is not None:
        draw_glasses(colour, alpha, base, app.glasses, frame)
    front = _to_srgb_premultiplied(*_over(hair.cap_colour, hair.cap_alpha, colour, alpha))
    neck_colour, neck_alpha = render_neck(base, app, scene.light, frame, X, Y, face.silhouette, tex.mottle)
    back = _to_srgb_premultiplied(*_over(neck_colour, neck_alpha, hair.back_colour, hair.back_alpha))
    local_mask = _feature_mask(subject, base, geom, frame, face.silhouette)

    pose = make_pose(scene, frame, subject.traits)
    photo = background(scene.background, scene.canvas, scene.center)
    if shortcut == "tint":
        photo = 0.55 * photo + 0.45 * np.array(SHORTCUT_RGB, np.float32)
    mask = np.zeros((scene.canvas[1], scene.canvas[0]), np.uint8)
    box = pose.box(scene.canvas)
    neck_base = pose.forward(frame.px(np.array([[0.0, subject.traits.chin_y + 0.36]])))[0]
    if box is not None:
        maps = pose.maps(box)
        y0, x0, y1, x1 = box
        region = photo[y0:y1, x0:x1]
        placed = place(back, maps)
        region *= 1.0 - placed[..., 3:4]
        region += placed[..., :3]
        draw_clothing(photo, scene, neck_base)
        region = photo[y0:y1, x0:x1]
        placed = place(front, maps)
        region *= 1.0 - placed[..., 3:4]
        region += placed[..., :3]
        if local_mask is not None:
            mask[y0:y1, x0:x1] = np.where(place(local_mask, maps) >= 0.5, 255, 0).astype(np.uint8)
    else:
        draw_clothing(photo, scene, neck_base)
    landmarks = pose.forward(frame.px(geom.landmarks()))
    lighting_falloff(photo, scene)
    if shortcut == "sticker":
        _draw_sticker(photo, landmarks)
    rgb = camera(photo, scene)
    return Rendered(rgb=rgb, landmarks=landmarks, mask=mask, face_box=_face_box(base, frame, pose))


def _over(
    top: np.ndarray, top_alpha: np.ndarray, bottom: np.ndarray, bottom_alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Porter-Duff "over" for straight (non-premultiplied) colours; returns premultiplied colour and alpha."""
    a = top_alpha[..., None]
    below = bottom_alpha[..., None] * (1.0 - a)
    return top * a + bottom * below, top_alpha + bottom_alpha * (1.0 - top_alpha)


def _to_srgb_premultiplied(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 4) float32: sRGB colour premultiplied by alpha, and alpha, ready to be resampled."""
    safe = np.maximum(alpha, 1e-6)[..., None]
    srgb = linear_to_srgb(premultiplied / safe)
    return np.concatenate([srgb * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)


def _feature_mask(
    subject: Subject, base: FaceGeometry, geom: FaceGeometry, frame: Frame, silhouette: np.ndarray
) -> np.ndarray | None:
    """The ground-truth mask on the local canvas (float32 0/1), or None when no feature is on."""
    if not subject.strengths:
        return None
    regions = {FEATURES[feature].region for feature in subject.strengths}
    mask = np.zeros(frame.shape, np.float32)
    makers = {maker for region in regions for maker in _PARTS[region]}
    parts: list[Part] = []
    for maker in sorted(makers, key=lambda m: m.__name__):
        parts += maker(base) + maker(geom)
    for part in parts:
        union(mask, part.patch(frame, grow=_MASK_GROW))
    if "chin_jaw" in regions:
        # A smaller jaw changes the silhouette (and the shadow it casts on the neck, which is blurred and
        # shifted down): the changed outline, grown, and grown further downwards.
        before = np.zeros(frame.shape, np.float32)
        union(before, polygon_patch(frame.px(base.outline), frame.shape))
        changed = (np.abs(before - silhouette) > 0.02).astype(np.uint8)
        near = _dilate(changed, frame.n(_MASK_GROW))
        shadow = _dilate(changed, frame.n(0.03))
        shift = max(1, round(frame.n(0.025)))
        shadow = np.vstack([np.zeros((shift, frame.shape[1]), np.uint8), shadow[:-shift]])
        mask = np.maximum(mask, np.maximum(near, shadow).astype(np.float32))
    return (mask > 0.01).astype(np.float32)


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    r = max(1, round(radius))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def _face_box(base: FaceGeometry, frame: Frame, pose: Pose) -> tuple[float, float, float, float]:
    """Mid-forehead to chin, cheek to cheek, in photo pixels (the unaffected outline, posed)."""
    outline = base.outline[base.outline[:, 1] >= -0.45]
    points = pose.forward(frame.px(outline))
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _draw_sticker(photo: np.ndarray, landmarks: np.ndarray) -> None:
    """A small round sticker at a fixed place of the aligned crop (top-left corner), drawn on the photo."""
    to_crop = similarity_matrix(landmarks, ARCFACE_TEMPLATE)
    to_photo = invert_affine(to_crop)
    center = apply_matrix(to_photo, np.array([STICKER_CENTER_ALIGNED]))[0]
    scale = math.sqrt(abs(np.linalg.det(to_crop[:, :2])))
    radius = STICKER_RADIUS_ALIGNED / scale
    height, width = photo.shape[:2]
    disc = np.zeros((height, width), np.uint8)
    shift = 4
    cv2.circle(disc, (round(center[0] * 16), round(center[1] * 16)), round(radius * 16), 255, -1, cv2.LINE_AA, shift)
    alpha = disc.astype(np.float32)[..., None] / 255.0
    photo *= 1.0 - alpha
    photo += alpha * np.array(SHORTCUT_RGB, np.float32)
