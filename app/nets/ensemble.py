"""Ensembles and test-time augmentation (TTA), GestaltMatcher-Arc style.

GestaltMatcher-Arc ranks with several networks (iResNet-50 and iResNet-100 fine-tuned on GMDB, and a
glint360k iResNet-100 without a syndrome head) and encodes every face in several *views*: each network ×
horizontal flip × grey. The distance from a query to a gallery image is the cosine distance averaged
over all views, view *k* of the query being compared with view *k* of the gallery image; a syndrome's
distance is that of its nearest image. So the gallery of an ensemble stores one embedding per view,
``(N, V, 512)``, in the same order this module produces them.

A model folder describes the ensemble in ``model.json`` (the card keeps unknown keys, so older apps
simply ignore it)::

    "ensemble": {
      "members": [{"id": "r100", "architecture": {"name": "iresnet100", "width": 1.0, "num_classes": C},
                   "weights": "r100.pt", "head_weights": null, "has_head": true}],
      "tta": {"flip": true, "gray": true}
    }

The card's own ``architecture`` / ``weights`` are member ``m0`` (the *primary* network, the one a single
-network code path such as the trainer uses); ``members`` lists the others, ``m1``, ``m2``, … A member
with ``has_head: false`` (glint360k) only contributes embeddings. Without an ``ensemble`` key a model is
one network and one view, exactly as before.

View order (the service's): for each member, for flip in (no, yes), for grey in (no, yes).
Everything here is a pure function of a network in eval mode: no hooks, no mutation, safe to share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from app.nets.errors import ModelFolderError
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess

__all__ = [
    "ALL_AUGMENTATIONS",
    "Augmentation",
    "Member",
    "Tta",
    "View",
    "augment",
    "encode_views",
    "parse_ensemble",
]



@dataclass(frozen=True)
class Augmentation:
    flip: bool = False
    gray: bool = False


@dataclass(frozen=True)
class Tta:
    """Which augmentations the ranking averages over (the service's ``flip_flag`` / ``gray_flag``)."""

    flip: bool = False
    gray: bool = False

    @property
    def augmentations(self) -> tuple[Augmentation, ...]:
        flips = (False, True) if self.flip else (False,)
        grays = (False, True) if self.gray else (False,)
        return tuple(Augmentation(flip=f, gray=g) for f in flips for g in grays)


#: Every augmentation the service's ``/encode`` reports (flip × grey), in its order.
ALL_AUGMENTATIONS: tuple[Augmentation, ...] = Tta(flip=True, gray=True).augmentations


@dataclass(frozen=True, eq=False)
class Member:
    """One network of an ensemble; ``name`` is the service's ``m{index}``."""

    name: str
    id: str
    network: IResNet  # eval mode, shared: never hooked or switched to training
    has_head: bool = True


@dataclass(frozen=True)
class View:
    """One encoding of the query: which member, which augmentation, its logits (None without a head)."""

    member: str
    augmentation: Augmentation
    logits: np.ndarray | None  # (C,) float32
    embedding: np.ndarray  # (512,) float32


@dataclass(frozen=True)
class MemberSpec:
    """A member as ``model.json`` describes it (before its weights are loaded)."""

    id: str
    architecture: dict[str, Any]
    weights: str
    head_weights: str | None
    has_head: bool


def augment(aligned_rgb: np.ndarray, augmentation: Augmentation) -> np.ndarray:
    """The (112, 112, 3) uint8 RGB crop under ``augmentation`` (grey first, then the mirror image)."""
    image = np.asarray(aligned_rgb)
    if augmentation.gray:
        # OpenCV's own conversion, as albumentations' ``to_gray`` gives GestaltMatcher-Arc: its fixed-point
        # BT.601 arithmetic rounds differently from float weights (up to 1 grey level on ~20 pixels of a crop,
        # ~2e-3 in a grey view's embedding), so only cv2 itself is bit-for-bit the service's grey.
        grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        image = np.repeat(grey[..., None], 3, axis=2)
    if augmentation.flip:
        image = image[:, ::-1, :]
    return np.ascontiguousarray(image)


def encode_views(
    members: Sequence[Member], aligned_rgb: np.ndarray, augmentations: Sequence[Augmentation]
) -> list[View]:
    """Encode one crop with every member under every augmentation, in the service's view order."""
    batch = preprocess([augment(aligned_rgb, a) for a in augmentations])
    views: list[View] = []
    with torch.inference_mode():
        for member in members:
            if member.network.training:
                raise RuntimeError(f"member {member.name} is in training mode; call .eval() first")
            logits, embeddings = member.network(batch)
            for i, augmentation in enumerate(augmentations):
                views.append(View(
                    member=member.name,
                    augmentation=augmentation,
                    logits=logits[i].float().numpy() if member.has_head else None,
                    embedding=embeddings[i].float().numpy(),
                ))
    return views


def _file(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or value.startswith("/") or ".." in value.split("/"):
        raise ModelFolderError(f"{where} must name a file inside the model folder")
    return value


def parse_ensemble(extra: dict[str, Any]) -> tuple[list[MemberSpec], Tta]:
    """The additional members and the TTA of a card's ``ensemble`` section (none: one network, no TTA)."""
    section = extra.get("ensemble")
    if section is None:
        return [], Tta()
    if not isinstance(section, dict):
        raise ModelFolderError("model.json 'ensemble' must be an object with 'members' and 'tta'")
    tta_raw = section.get("tta") or {}
    if not isinstance(tta_raw, dict) or not all(isinstance(tta_raw.get(k, False), bool) for k in ("flip", "gray")):
        raise ModelFolderError("model.json ensemble 'tta' must be {\"flip\": bool, \"gray\": bool}")
    tta = Tta(flip=tta_raw.get("flip", False), gray=tta_raw.get("gray", False))
    members_raw = section.get("members") or []
    if not isinstance(members_raw, list):
        raise ModelFolderError("model.json ensemble 'members' must be a list")
    specs: list[MemberSpec] = []
    for i, item in enumerate(members_raw, start=1):
        where = f"model.json ensemble member {i}"
        if not isinstance(item, dict) or not isinstance(item.get("architecture"), dict):
            raise ModelFolderError(f"{where} needs an 'architecture' object")
        member_id = item.get("id", f"m{i}")
        if not isinstance(member_id, str) or not member_id:
            raise ModelFolderError(f"{where} 'id' must be a string")
        has_head = item.get("has_head", True)
        if not isinstance(has_head, bool):
            raise ModelFolderError(f"{where} 'has_head' must be true or false")
        specs.append(MemberSpec(
            id=member_id,
            architecture=item["architecture"],
            weights=_file(item.get("weights"), f"{where} 'weights'") or "",
            head_weights=_file(item.get("head_weights"), f"{where} 'head_weights'", optional=True),
            has_head=has_head,
        ))
    return specs, tta
