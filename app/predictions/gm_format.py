"""The GestaltMatcher-Arc service's wire format, as pure functions (no requests, no database).

Read from the service's ``main.py`` and ``lib/evaluation.py`` / ``lib/encode.py`` (igsb/GestaltMatcher-Arc,
branch ``service``) and its README, not copied:

* the photo arrives as ``{"img": base64 of the file}``; the service decodes with ``base64.b64decode``
  without validation, so line-wrapped base64 (``base64.encodebytes``: a newline every 76 characters)
  works. We accept that, ``\\r\\n`` breaks, other whitespace, a missing ``=`` padding and a
  ``data:image/...;base64,`` prefix; characters outside the base64 alphabets are refused (the service
  would silently drop them and then fail on a corrupted file);
* syndromes: ``{syndrome_name, omim_id (int, or "" when the syndrome has none), distance, gestalt_score
  (= distance; both null without a gallery, never a higher-is-better number), image_id (str), subject_id
  (str)}``, best first, distances rounded to 3 decimals, one
  entry per syndrome that has gallery images (the service's gallery knows no others);
* genes: ``{gene_name, gene_entrez_id, distance, gestalt_score, image_id, subject_id}``, ranked like the
  syndromes — walking the gallery images nearest first, each image's syndrome's genes in their listed
  order, keeping a gene's first occurrence — which is the same as giving a gene the distance of its
  nearest syndrome;
* ``/encode``: ``{"encodings": pandas.DataFrame.to_dict()}`` — column → {row index → value} with columns
  img_name ("input"), model ("m0", "m1", …), flip (0/1), gray (0/1), class_conf (the member's logits, or
  ``[0]`` for a member without a head, as the service gives for its ONNX network) and representations
  (the 512 floats). JSON turns the row indices into strings ("0", "1", …), as it does for the service.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

from app.nets.card import Label
from app.nets.ensemble import View
from app.nets.predict import Prediction

__all__ = [
    "ENCODING_COLUMNS",
    "InvalidBase64",
    "decode_image_field",
    "encodings_frame",
    "gene_entries",
    "omim_int",
    "syndrome_entries",
]

ENCODING_COLUMNS = ("img_name", "model", "flip", "gray", "class_conf", "representations")
DISTANCE_DECIMALS = 3
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_STANDARD = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_URLSAFE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
_OMIM = re.compile(r"^(?:OMIM:)?\s*([0-9]{1,9})$", re.IGNORECASE)


class InvalidBase64(ValueError):
    """``img`` is not base64 of anything."""


def decode_image_field(text: str) -> bytes:
    """The file bytes of an ``img`` field (see the module docstring for the variants accepted)."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    compact = _WHITESPACE.sub("", text)
    if _STANDARD.match(compact):
        alphabet = None
    elif _URLSAFE.match(compact):
        alphabet = b"-_"
    else:
        raise InvalidBase64("img is not valid base64 (characters outside the base64 alphabet)")
    body = compact.rstrip("=")
    if len(body) % 4 == 1:
        raise InvalidBase64("img is not valid base64 (its length cannot be a whole number of bytes)")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"img is not valid base64: {exc}") from exc


def omim_int(omim: str | None) -> int | str:
    """The service sends OMIM ids as integers, and "" for a syndrome without one."""
    match = _OMIM.match(omim.strip()) if omim else None
    return int(match.group(1)) if match else ""


def _rounded(value: float) -> float:
    return round(float(value), DISTANCE_DECIMALS)


def _ranked_by_gallery(ranked: Sequence[Prediction]) -> list[Prediction]:
    with_images = [p for p in ranked if p.distance is not None]
    return with_images if with_images else list(ranked)


def syndrome_entries(ranked: Sequence[Prediction]) -> list[dict[str, Any]]:
    """The service's ``suggested_syndromes_list`` from a full ranking (best first).

    GestaltMatcher clients read ``distance`` and ``gestalt_score`` as a cosine distance (lower is better)
    and sort by it, so a higher-is-better number never goes there. Without a gallery (a model that ranks
    by its head alone) both are null and the list stays best first; the answer's ``ranked_by`` sibling
    says "softmax", and the probabilities themselves are on GestaltLens's own API (``/api/v1``).
    """
    entries = []
    for p in _ranked_by_gallery(ranked):
        distance = None if p.distance is None else _rounded(p.distance)
        entries.append({
            "syndrome_name": p.name,
            "omim_id": omim_int(p.omim),
            "distance": distance,
            "gestalt_score": distance,
            "image_id": p.image_id or "",
            "subject_id": p.subject_id or "",
        })
    return entries


def gene_entries(ranked: Sequence[Prediction], labels: Sequence[Label]) -> list[dict[str, Any]]:
    """The service's ``suggested_genes_list``: genes ranked like their syndromes, first occurrence kept."""
    by_id = {label.id: label for label in labels}  # the model's syndromes (head labels and gallery labels)
    seen: set[tuple[str, str | None]] = set()
    entries = []
    for p in _ranked_by_gallery(ranked):
        for gene in by_id[p.syndrome_id].genes:
            key = (gene.name, gene.entrez)
            if key in seen:
                continue
            seen.add(key)
            distance = None if p.distance is None else _rounded(p.distance)
            entries.append({
                "gene_name": gene.name,
                "gene_entrez_id": gene.entrez,
                "distance": distance,
                "gestalt_score": distance,
                "image_id": p.image_id or "",
                "subject_id": p.subject_id or "",
            })
    return entries


def encodings_frame(views: Sequence[View], img_name: str = "input") -> dict[str, dict[str, Any]]:
    """``DataFrame.to_dict()`` of the service's encodings table, one row per (member, flip, grey)."""
    frame: dict[str, dict[str, Any]] = {column: {} for column in ENCODING_COLUMNS}
    for row, view in enumerate(views):
        key = str(row)
        frame["img_name"][key] = img_name
        frame["model"][key] = view.member
        frame["flip"][key] = int(view.augmentation.flip)
        frame["gray"][key] = int(view.augmentation.gray)
        frame["class_conf"][key] = [0] if view.logits is None else [float(x) for x in view.logits]
        frame["representations"][key] = [float(x) for x in view.embedding]
    return frame
