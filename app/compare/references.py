"""What a similarity objective compares with: reference embeddings and the images maps are drawn on.

A reference is named by the objective's key (:mod:`app.explain.objectives`):

* ``similarity:case:<id>`` — another case's embedding, computed from its stored aligned crop by the served
  network (the same forward the ranking uses);
* ``similarity:gallery:<image id>`` — one gallery row, as stored (GestaltMatcher galleries ship embeddings);
* ``similarity:centroid:<syndrome id>`` — the mean of that syndrome's L2-normalised gallery rows.

Gallery *images* are not shipped. The demo model's gallery is the training split of a synthetic data set
(``training_data.dataset`` in its card: format ``gestaltlens-synth/1`` and a seed), and the generator is
deterministic, so a gallery image ``<class>-<index>`` is rendered again from (seed, class, index) and run
through the real detection and alignment — the same crop the trainer embedded. Any other gallery has
embeddings only; :func:`gallery_image` then says why there is no image, and pages show the query side only.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.explain.objectives import Objective, parse_key
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png

__all__ = ["GalleryImage", "case_embedding", "gallery_image", "reference_objective"]

_SYNTH_ID = re.compile(r"(?P<cls>[a-z_]+)-(?P<index>[0-9]{5})")
_RENDER_LOCK = threading.Lock()


def case_embedding(model: LoadedModel, crop: np.ndarray) -> np.ndarray:
    """(512,) float32 embedding of an aligned uint8 crop by the served network."""
    from app.nets.preprocess import preprocess

    network = model.network
    with torch.no_grad():
        return network(preprocess(crop).to(next(network.parameters()).device))[1][0].float().cpu().numpy()


def _gallery_rows(model: LoadedModel, key: str) -> tuple[str, np.ndarray]:
    _kind, what, ident = parse_key(key)
    gallery = model.gallery
    if gallery is None:
        raise LookupError(f"model {model.version} has no gallery")
    if what == "gallery":
        hits = np.flatnonzero(gallery.image_ids == ident)
        if hits.size == 0:
            raise LookupError(f"gallery image {ident!r} is not in the gallery of model {model.version}")
        return ident, gallery.embeddings[int(hits[0])]
    hits = np.flatnonzero(gallery.labels == ident)
    if hits.size == 0:
        raise LookupError(f"syndrome {ident!r} has no gallery image in model {model.version}")
    centroid = gallery.unit[hits].astype(np.float64).mean(axis=0)
    return ident, centroid


def reference_objective(session: Session, store: PhotoStore, model: LoadedModel, key: str) -> Objective:
    """The :class:`Objective` a stored similarity key names. LookupError if its reference is gone."""
    kind, what, ident = parse_key(key)
    if kind != "similarity":
        raise ValueError(f"{key} is not a similarity objective")
    if what == "case":
        case = session.get(Case, ident)
        if case is None:
            raise LookupError(f"reference case {ident} no longer exists")
        embedding = case_embedding(model, decode_png(store.read(case.aligned_path)))
        return Objective.similarity(embedding, name=key)
    _, vector = _gallery_rows(model, key)
    return Objective.similarity(vector, name=key)


@dataclass(frozen=True)
class GalleryImage:
    """A gallery image's aligned crop, or ``crop=None`` with the reason no image can be shown."""

    image_id: str
    crop: np.ndarray | None
    reason: str = ""


def _synth_source(model: LoadedModel) -> tuple[int, str] | str:
    data = model.card.training_data
    dataset = data.get("dataset") if isinstance(data, dict) else None
    if not isinstance(dataset, dict) or dataset.get("format") != "gestaltlens-synth/1":
        return ("this model's gallery ships embeddings only (GestaltMatcher galleries usually do); "
                "its images cannot be shown")
    if dataset.get("shortcut"):
        return "the gallery's synthetic data set used a shortcut cue the re-rendering does not reproduce"
    seed = dataset.get("seed")
    if not isinstance(seed, int):
        return "the model card does not record the synthetic data set's seed"
    return seed, "gestaltlens-synth/1"


def gallery_image(model: LoadedModel, image_id: str, cache_dir: Path | None = None) -> GalleryImage:
    """Re-render a synthetic gallery image (deterministic from the card's seed) or say why not.

    Rendering and aligning costs about 0.3 s; the crop is cached as a PNG under ``cache_dir`` when given.
    """
    if model.gallery is None or image_id not in set(model.gallery.image_ids.tolist()):
        return GalleryImage(image_id, None, f"{image_id!r} is not in the model's gallery")
    source = _synth_source(model)
    if isinstance(source, str):
        return GalleryImage(image_id, None, source)
    match = _SYNTH_ID.fullmatch(image_id)
    if match is None:
        return GalleryImage(image_id, None, f"gallery image id {image_id!r} is not a synthetic data set id")
    cached = cache_dir / f"{model.card.id}-{model.card.version}" / f"{image_id}.png" if cache_dir else None
    if cached is not None and cached.is_file():
        return GalleryImage(image_id, decode_png(cached.read_bytes()))
    from app.synth.generate import generate_one
    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    with _RENDER_LOCK:
        face = generate_one(source[0], match["cls"], int(match["index"]))
        try:
            crop = process_photo(face.jpeg).aligned.crop
        except IntakeError as error:
            return GalleryImage(image_id, None, f"the re-rendered gallery face was not detected ({error.code})")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if ok:
            cached.write_bytes(png.tobytes())
    return GalleryImage(image_id, crop)
