"""Syndrome ranking for one aligned face, GestaltMatcher-Arc style.

The network gives two things: softmax probabilities from its head, and a 512-d embedding. Like
GestaltMatcher-Arc, the *ranking* uses the embedding: the cosine distance from the query to every gallery
embedding, a syndrome's distance being that of its nearest gallery image (whose id is reported, so a
clinician can look at the case the match came from). Syndromes without gallery images are ranked after
those with, by softmax. Without a gallery the ranking is the softmax order. ``score`` is always the
head's softmax probability for that syndrome, so both views are visible.

Everything here is a pure function of its inputs: inference runs under ``torch.inference_mode()`` on a
network that must already be in eval mode (it is never switched here, because the model is shared), no
hooks are installed, nothing is cached — so several threads may call :func:`predict` on the same model.
The trainer measures its metrics with :func:`rank_classes` too, so the reported accuracy is the accuracy
of exactly this ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app.nets.ensemble import encode_views
from app.nets.gallery import Gallery
from app.nets.iresnet import IResNet
from app.nets.ood import OodResult, assess
from app.nets.preprocess import preprocess
from app.nets.registry import LoadedModel

__all__ = [
    "Prediction",
    "PredictionResult",
    "class_distances",
    "embed",
    "infer",
    "predict",
    "rank_classes",
]


@dataclass(frozen=True)
class Prediction:
    """One syndrome in the ranked list."""

    rank: int  # 1-based
    syndrome_id: str
    name: str
    omim: str | None
    score: float  # softmax probability from the head
    distance: float | None  # cosine distance to the nearest gallery image; None without one
    image_id: str | None  # that nearest gallery image
    subject_id: str | None = None  # that image's patient, when the gallery records subjects


@dataclass(frozen=True, eq=False)
class PredictionResult:
    embedding: np.ndarray  # (512,) float32, the raw ``features`` output (not normalised)
    softmax: list[float]  # per class index, sums to 1
    ranked: list[Prediction]  # top_k, best first
    model_version: str  # "id@version"
    ranking: str  # "gallery" (nearest gallery image) or "softmax"
    # far from everything the model has seen? (None: the card has no calibration; see app.nets.ood)
    out_of_distribution: OodResult | None = None


def _network(model: LoadedModel | IResNet) -> IResNet:
    network = model.network if isinstance(model, LoadedModel) else model
    if network.training:
        raise RuntimeError("the network is in training mode; call .eval() before inference (BatchNorm and "
                           "dropout would otherwise use batch statistics and mutate the shared model)")
    return network


def infer(
    model: LoadedModel | IResNet,
    images: np.ndarray | Sequence[np.ndarray] | torch.Tensor,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), embeddings (N, 512)) as float32 arrays for uint8 RGB crops or a preprocessed batch."""
    network = _network(model)
    batch = images if isinstance(images, torch.Tensor) else preprocess(images)
    logits, embeddings = [], []
    with torch.inference_mode():
        for start in range(0, batch.shape[0], batch_size):
            out_logits, out_embedding = network(batch[start:start + batch_size])
            logits.append(out_logits.float().numpy())
            embeddings.append(out_embedding.float().numpy())
    return np.concatenate(logits), np.concatenate(embeddings)


def embed(
    model: LoadedModel | IResNet,
    images: np.ndarray | Sequence[np.ndarray] | torch.Tensor,
    batch_size: int = 64,
) -> np.ndarray:
    """(N, 512) float32 embeddings — what galleries are built from."""
    return infer(model, images, batch_size)[1]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=-1, keepdims=True)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)).astype(np.float64)


def view_distances(gallery: Gallery, query_views: np.ndarray) -> np.ndarray:
    """(N,) cosine distance from one query's (V, 512) view embeddings to every gallery image, averaged
    over the views (view k against the image's view k), as GestaltMatcher-Arc's ensemble does."""
    query_views = np.atleast_2d(np.asarray(query_views))
    if query_views.shape[0] != gallery.views:
        raise ValueError(f"the query has {query_views.shape[0]} views, the gallery {gallery.views}")
    if gallery.unit_views is None:
        return 1.0 - (gallery.unit.astype(np.float64) @ _unit(query_views)[0])
    per_view = 1.0 - np.einsum("vnd,vd->vn", gallery.unit_views.astype(np.float64), _unit(query_views))
    return per_view.mean(axis=0)


def class_distances(gallery: Gallery, num_classes: int, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query and class: cosine distance to the class's nearest gallery image (inf when the class has
    none) and that image's row (-1 when none). ``queries`` is (M, 512); results are (M, C)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    distance = 1.0 - (_unit(queries) @ gallery.unit.T.astype(np.float64))  # (M, N)
    return nearest_per_class(gallery, num_classes, distance)


def nearest_per_class(gallery: Gallery, num_classes: int, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query and class, the smallest of the (M, N) image distances and that image's row."""
    distance = np.atleast_2d(distance)
    queries = distance
    best = np.full((queries.shape[0], num_classes), np.inf)
    row = np.full((queries.shape[0], num_classes), -1, dtype=np.int64)
    for c in np.unique(gallery.label_indices):
        members = np.flatnonzero(gallery.label_indices == c)
        nearest = members[np.argmin(distance[:, members], axis=1)]
        best[:, c] = distance[np.arange(queries.shape[0]), nearest]
        row[:, c] = nearest
    return best, row


def rank_classes(probabilities: np.ndarray, distances: np.ndarray | None = None) -> np.ndarray:
    """Class indices best first: by distance (inf last) then softmax, or by softmax alone; ties by index."""
    probabilities = np.asarray(probabilities)
    index = np.arange(probabilities.shape[-1])
    if distances is None:
        return np.lexsort((index, -probabilities))
    return np.lexsort((index, -probabilities, np.asarray(distances)))


def predict(model: LoadedModel, aligned_rgb: np.ndarray, top_k: int = 10) -> PredictionResult:
    """Rank the model's syndromes for one aligned (112, 112, 3) uint8 RGB crop."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if aligned_rgb.ndim != 3:
        raise ValueError(f"predict takes one aligned crop (112, 112, 3), got shape {aligned_rgb.shape}")
    gallery = model.gallery
    distances = rows = None
    if model.views == 1:
        logits, embeddings = infer(model, aligned_rgb)
        probabilities = softmax(logits)[0]
        if gallery is not None:
            dist_all, row_all = class_distances(gallery, len(model.labels), embeddings)
            distances, rows = dist_all[0], row_all[0]
    else:  # an ensemble and/or test-time augmentation: average over every view
        views = encode_views(model.ensemble, aligned_rgb, model.tta.augmentations)
        embeddings = views[0].embedding[None, :]
        head_logits = np.stack([v.logits for v in views if v.logits is not None])
        probabilities = softmax(head_logits).mean(axis=0)
        if gallery is not None:
            image_distance = view_distances(gallery, np.stack([v.embedding for v in views]))
            dist_all, row_all = nearest_per_class(gallery, len(model.labels), image_distance[None, :])
            distances, rows = dist_all[0], row_all[0]
    order = rank_classes(probabilities, distances)[:top_k]
    ranked = []
    for rank, c in enumerate(order.tolist(), start=1):
        label = model.labels[c]
        has_image = rows is not None and rows[c] >= 0
        ranked.append(Prediction(
            rank=rank,
            syndrome_id=label.id,
            name=label.name,
            omim=label.omim,
            score=float(probabilities[c]),
            distance=float(distances[c]) if has_image else None,
            image_id=str(gallery.image_ids[rows[c]]) if has_image else None,
            subject_id=str(gallery.subject_ids[rows[c]]) if has_image and gallery.subject_ids is not None else None,
        ))
    return PredictionResult(
        embedding=embeddings[0].astype(np.float32),
        softmax=[float(p) for p in probabilities],
        ranked=ranked,
        model_version=model.version,
        ranking="gallery" if gallery is not None else "softmax",
        out_of_distribution=assess(model.card, gallery, embeddings[0]),
    )
