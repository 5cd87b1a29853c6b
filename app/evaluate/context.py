"""Face vs context: is the model looking at the face or at the surroundings? (thesis 6.4.1)

Two views of the same question:

* **Where the map puts its attribution**: the share of ``|map|`` (attribution in either direction) inside
  the face, in hair, background and neck, and in each region of the facial region vocabulary
  (:mod:`app.synth.regions`). Maps live on the aligned crop, where the landmarks sit on the ArcFace
  template, so the areas come from the template: *face* is the template's face oval, *ears* are the two
  ear ellipses, *neck* is the part of "hair / background" below the chin line between the jaw's ends,
  *hair* the rest of it above eye level and *background* what is left. The four context areas and face and
  ears partition the crop; the vocabulary's regions overlap a little at their borders, so their shares need
  not add up to 1.
* **What the prediction does without the context**: every pixel outside the face oval (and ears) replaced
  by the face's own mean colour, and the target's logit and rank measured before and after. A model that
  ranks by a cue beside the face (the generator's ``--shortcut-class`` sticker) loses the target here.

Arrays in, plain results out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from app.synth.regions import REGION_IDS, region_mask

__all__ = ["AREAS", "ContextShares", "OcclusionOfContext", "area_masks", "context_occlusion", "context_shares"]

AREAS = ("face", "ears", "hair", "background", "neck")
_CHIN_LINE = 104  # template y below the chin
_EYE_LEVEL = 52


@lru_cache(maxsize=4)
def _areas(size: int) -> dict[str, np.ndarray]:
    outside = region_mask("hair_background", size)
    ears = region_mask("ears", size) & ~region_mask("chin_jaw", size)
    face = ~outside & ~ears
    ys, xs = np.mgrid[0:size, 0:size] * (112.0 / size)
    neck = outside & (ys >= _CHIN_LINE) & (np.abs(xs - 56.0) <= 34.0)
    hair = outside & ~neck & (ys < _EYE_LEVEL)
    background = outside & ~neck & ~hair
    areas = {"face": face, "ears": ears, "hair": hair, "background": background, "neck": neck}
    for mask in areas.values():
        mask.setflags(write=False)
    return areas


def area_masks(size: int = 112) -> dict[str, np.ndarray]:
    """The partition of the crop into face, ears, hair, background and neck (boolean masks)."""
    return {name: mask.copy() for name, mask in _areas(size).items()}


@dataclass(frozen=True)
class ContextShares:
    """Shares of ``|map|`` per area (a partition: they sum to 1) and per vocabulary region."""

    areas: dict[str, float]
    regions: dict[str, float]
    area_fraction: dict[str, float]  # each area's share of the crop: the share a flat map would give

    @property
    def context(self) -> float:
        """Everything but the face oval: ears, hair, background and neck."""
        return 1.0 - self.areas["face"]

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "context": self.context}


def context_shares(attribution: np.ndarray) -> ContextShares:
    """Where a map's attribution lies; a map of zeros gives zero shares everywhere."""
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    if magnitude.ndim != 2 or magnitude.shape[0] != magnitude.shape[1]:
        raise ValueError(f"a map must be square 2-D, got {magnitude.shape}")
    size = magnitude.shape[0]
    total = magnitude.sum()
    areas = _areas(size)

    def share(mask: np.ndarray) -> float:
        return float(magnitude[mask].sum() / total) if total > 0 else 0.0

    return ContextShares(
        areas={name: share(mask) for name, mask in areas.items()},
        regions={region: share(region_mask(region, size)) for region in REGION_IDS},
        area_fraction={name: float(mask.mean()) for name, mask in areas.items()},
    )


@dataclass(frozen=True)
class OcclusionOfContext:
    """The target's logit and rank (1 = top) on the photo, and with everything outside the face replaced."""

    logit: float
    logit_face_only: float
    rank: int
    rank_face_only: int

    @property
    def logit_change(self) -> float:
        return self.logit_face_only - self.logit

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "logit_change": self.logit_change}


def face_only(image: np.ndarray) -> np.ndarray:
    """A normalised (3, H, W) image with every pixel outside the face oval set to the face's mean colour."""
    image = np.asarray(image, dtype=np.float32)
    face = _areas(image.shape[-1])["face"]
    out = image.copy()
    mean = image[:, face].mean(axis=1)
    out[:, ~face] = mean[:, None]
    return out


def context_occlusion(logits: Callable[[np.ndarray], np.ndarray], image: np.ndarray, target: int) -> OcclusionOfContext:
    """``logits`` maps (N, 3, H, W) normalised images to (N, C) logits; ``image`` is one (3, H, W) image."""
    batch = np.stack([np.asarray(image, dtype=np.float32), face_only(image)])
    values = np.asarray(logits(batch), dtype=np.float64)
    ranks = [int((row > row[target]).sum()) + 1 for row in values]
    return OcclusionOfContext(logit=float(values[0, target]), logit_face_only=float(values[1, target]),
                              rank=ranks[0], rank_face_only=ranks[1])
