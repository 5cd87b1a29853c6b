"""One synthetic photo, regenerable on its own from (seed, class, index).

``generate_one`` is what the data set writer calls for every image and what tests and other code call to
get any single image back, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.synth.classes import get_class
from app.synth.params import sample_subject
from app.synth.render import SHORTCUT_KINDS, render_subject
from app.synth.scene import encode_jpeg
from app.synth.seeding import STREAM_SHORTCUT, image_rng

#: Bumped whenever a change makes the same (seed, class, index) render differently.
GENERATOR_VERSION = "1.1.0"


@dataclass(frozen=True)
class ShortcutSpec:
    """A context cue correlated with one class, for studying models that look beside the face.

    Images of ``class_id`` carry the cue with ``probability``, all other images with
    ``other_probability``. ``kind`` "sticker" puts a small magenta disc at the top-left corner of where
    the aligned crop will be (in hair or background); "tint" tints the whole backdrop.
    """

    class_id: str
    probability: float = 0.9
    other_probability: float = 0.05
    kind: str = "sticker"

    def __post_init__(self) -> None:
        get_class(self.class_id)
        if self.kind not in SHORTCUT_KINDS:
            raise ValueError(f"unknown shortcut kind {self.kind!r}; expected one of {SHORTCUT_KINDS}")
        for value in (self.probability, self.other_probability):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"shortcut probabilities must be in [0, 1], got {value}")

    def to_dict(self) -> dict[str, object]:
        return {
            "class": self.class_id,
            "probability": self.probability,
            "other_probability": self.other_probability,
            "kind": self.kind,
        }

    def present(self, seed: int, class_id: str, index: int) -> bool:
        """Whether this image carries the cue: its own random stream, so the face is the same either way."""
        p = self.probability if class_id == self.class_id else self.other_probability
        return bool(image_rng(seed, class_id, index, STREAM_SHORTCUT).uniform() < p)


@dataclass(frozen=True, eq=False)
class SynthFace:
    """One generated photo with its ground truth.

    ``rgb`` is the rendered photo *before* JPEG compression (the exact pixels the mask describes);
    ``jpeg`` is what a data set stores and what the detector sees. ``mask`` is uint8 0/255 in photo
    pixels (empty for unaffected faces and for severity 0); ``landmarks`` (5, 2) are in photo pixels,
    YuNet order. ``face_box`` (x, y, w, h) spans mid-forehead to chin and cheek to cheek.
    """

    seed: int
    index: int
    label: str
    severity: float
    features: tuple[str, ...]
    shortcut: bool
    rgb: np.ndarray
    jpeg: bytes
    mask: np.ndarray
    landmarks: np.ndarray
    face_box: tuple[float, float, float, float]
    jpeg_quality: int

    @property
    def image_id(self) -> str:
        return image_id(self.label, self.index)


def image_id(class_id: str, index: int) -> str:
    """The file stem of an image in a data set: class and index (unique within one data set)."""
    return f"{class_id}-{index:05d}"


def generate_one(
    seed: int,
    class_id: str,
    index: int,
    *,
    severity: float | None = None,
    shortcut: ShortcutSpec | None = None,
) -> SynthFace:
    """Render image ``index`` of class ``class_id`` under global ``seed``.

    ``severity`` overrides the drawn severity: 0 renders the same person, pose and scene with the
    features off (for mask tests and counterfactuals); ``None`` keeps the drawn one (0.3-1.0 for
    syndromes). Unaffected faces always have severity 0.
    """
    cls = get_class(class_id)
    subject = sample_subject(image_rng(seed, class_id, index), cls.features, severity if cls.features else 0.0)
    cue = shortcut is not None and shortcut.present(seed, class_id, index)
    rendered = render_subject(subject, shortcut=shortcut.kind if cue and shortcut is not None else None)
    return SynthFace(
        seed=seed,
        index=index,
        label=cls.id,
        severity=subject.severity,
        features=tuple(subject.strengths),
        shortcut=cue,
        rgb=rendered.rgb,
        jpeg=encode_jpeg(rendered.rgb, subject.scene.jpeg_quality),
        mask=rendered.mask,
        landmarks=rendered.landmarks,
        face_box=rendered.face_box,
        jpeg_quality=subject.scene.jpeg_quality,
    )
