"""Syndrome ranking for one aligned face, GestaltMatcher-Arc style.

The network gives two things: softmax probabilities from its head, and a 512-d embedding. Like
GestaltMatcher-Arc, the *ranking* uses the embedding: the cosine distance from the query to every gallery
embedding, a syndrome's distance being that of its nearest gallery image (whose id is reported, so a
clinician can look at the case the match came from). Syndromes without gallery images are ranked after
those with, by softmax. Without a gallery the ranking is the softmax order. ``score`` is the head's
softmax probability for that syndrome (None for a syndrome the head does not know, and for a network
without a head), so both views are visible.

Everything here is a pure function of its inputs: inference runs under ``torch.inference_mode()`` on a
network that must already be in eval mode (it is never switched here, because the model is shared), no
hooks are installed, and the only thing cached is each gallery's search index (read-only once built; two
threads that race to build it keep the first) — so several threads may call :func:`predict` on the same model.
The trainer measures its metrics with :func:`rank_classes` too, so the reported accuracy is the accuracy
of exactly this ranking.

Ranking goes through the gallery's :class:`~app.nets.search.NearestIndex` (one per loaded gallery: the
one saved beside the gallery file and loaded with the model, else built on first use; see
:mod:`app.nets.gallery_index`). Only the syndromes that can reach the top ``top_k`` are scored in float64
and ranked: on a gallery below the index's size threshold, those whose best float32 score is within the rounding
tolerance of the ``top_k``-th best syndrome (so the ranking, distances and image ids are exactly those of
scoring every image in float64, as before); on a larger gallery, the syndromes of the approximate index's
nearest images (recall measured in ``bench/bench_matching.py``), with an exact scan when those do not
name ``top_k`` syndromes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app.nets.card import Label
from app.nets.ensemble import encode_views
from app.nets.gallery import Gallery
from app.nets.gallery_index import GallerySearch, gallery_search
from app.nets.iresnet import IResNet
from app.nets.ood import OodResult, assess
from app.nets.preprocess import preprocess
from app.nets.registry import LoadedModel
from app.nets.search import tolerance

__all__ = [
    "Prediction",
    "PredictionResult",
    "class_distances",
    "embed",
    "encode_query",
    "gallery_search",
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
    score: float | None  # softmax probability from the head; None when the head does not know the syndrome
    distance: float | None  # cosine distance to the nearest gallery image; None without one
    image_id: str | None  # that nearest gallery image
    subject_id: str | None = None  # that image's patient, when the gallery records subjects
    source: str | None = None  # where the nearest face came from: "gallery" or "case"; None without one


@dataclass(frozen=True, eq=False)
class PredictionResult:
    embedding: np.ndarray  # (512,) float32, the raw ``features`` output (not normalised)
    softmax: list[float]  # per class index, sums to 1
    ranked: list[Prediction]  # top_k, best first
    model_version: str  # "id@version"
    ranking: str  # "gallery" (nearest gallery image), "softmax", or "none" (no head and no gallery)
    # far from everything the model has seen? (None: the card has no calibration; see app.nets.ood)
    out_of_distribution: OodResult | None = None
    views: np.ndarray | None = None  # (V, 512) float32: every view's embedding (what matching stores)


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


def encode_query(model: LoadedModel, aligned_rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(softmax over the head's labels or None without a head, (V, 512) view embeddings) for one crop."""
    if aligned_rgb.ndim != 3:
        raise ValueError(f"predict takes one aligned crop (112, 112, 3), got shape {aligned_rgb.shape}")
    if model.views == 1:
        logits, embeddings = infer(model, aligned_rgb)
        return (softmax(logits)[0] if model.has_head else None), embeddings
    views = encode_views(model.ensemble, aligned_rgb, model.tta.augmentations)
    head_logits = [v.logits for v in views if v.logits is not None]
    probabilities = softmax(np.stack(head_logits)).mean(axis=0) if head_logits else None
    return probabilities, np.stack([v.embedding for v in views]).astype(np.float32)


def _index_query(views: np.ndarray) -> np.ndarray:
    """A query's (V, 512) views as one row for :func:`~app.nets.gallery_index.index_rows`: unit views,
    concatenated, / √V."""
    unit = _unit(views).astype(np.float32)
    return (unit.reshape(1, -1) / np.float32(np.sqrt(unit.shape[0]))).astype(np.float32)


def _full_scores(gallery: Gallery, search: GallerySearch, views: np.ndarray) -> np.ndarray:
    """(N,) float32 mean cosine over views from every gallery image to the query (a full scan)."""
    if not search.index.approximate:
        return search.index.scores(_index_query(views))[0]
    query = _unit(views).astype(np.float32)
    if gallery.unit_views is None:
        return gallery.unit @ query[0]
    return sum(gallery.unit_views[v] @ query[v] for v in range(gallery.views)) / np.float32(gallery.views)


def _rows_for_top(gallery: Gallery, search: GallerySearch, views: np.ndarray, top_k: int) -> np.ndarray:
    """Ascending gallery rows that hold the nearest image of each syndrome that can rank in the top ``top_k``.

    Exact: with s_k the ``top_k``-th largest per-syndrome best float32 score, every row scoring at least
    s_k − tolerance. A row below that is, in exact arithmetic, worse than the best image of ``top_k``
    syndromes, so the syndrome whose nearest image it is cannot be among the first ``top_k``; the syndromes
    that can keep their exact nearest image. Approximate: the index's nearest rows, widened until they name
    ``top_k`` syndromes (or every syndrome of the gallery), else the exact rule on a full scan."""
    wanted = min(top_k, len(search.classes))
    index = search.index
    if index.approximate:
        k = min(len(index), max(64, 8 * top_k))
        while True:
            rows = index.candidates(_index_query(views), k)[0]
            if len(np.unique(gallery.label_indices[rows])) >= wanted:
                return rows
            if k >= min(len(index), 16_384):
                break
            k = min(len(index), 4 * k)
    scores = _full_scores(gallery, search, views)
    best = np.maximum.reduceat(scores[search.order], search.starts)
    threshold = np.partition(best, len(best) - wanted)[len(best) - wanted]
    return np.flatnonzero(scores >= threshold - tolerance(index.dim))


def _distances(gallery: Gallery, syndromes: int, views: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per syndrome, the float64 cosine distance to its nearest gallery image and that image's row, for the
    syndromes that can rank in the top ``top_k`` (inf and -1 for the others, which rank after them)."""
    views = np.atleast_2d(np.asarray(views))
    if gallery.views == 1:
        views = views[:1]  # a one-view gallery is compared with the query's first view
    elif views.shape[0] != gallery.views:
        raise ValueError(f"the query has {views.shape[0]} views, the gallery {gallery.views}")
    rows = _rows_for_top(gallery, gallery_search(gallery), views, top_k)
    if gallery.unit_views is None:
        image_distance = 1.0 - (gallery.unit[rows].astype(np.float64) @ _unit(views[:1])[0])
    else:
        per_view = 1.0 - np.einsum("vnd,vd->vn", gallery.unit_views[:, rows].astype(np.float64), _unit(views))
        image_distance = per_view.mean(axis=0)
    best = np.full(syndromes, np.inf)
    row = np.full(syndromes, -1, dtype=np.int64)
    labels = gallery.label_indices[rows]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        closest = members[np.argmin(image_distance[members])]  # the first of equals: the lowest row, as before
        best[c], row[c] = image_distance[closest], rows[closest]
    return best, row


def predict(
    model: LoadedModel,
    aligned_rgb: np.ndarray,
    top_k: int = 10,
    *,
    extra: Gallery | None = None,
    syndromes: Sequence[Label] | None = None,
) -> PredictionResult:
    """Rank syndromes for one aligned (112, 112, 3) uint8 RGB crop.

    ``extra`` is a second gallery (confirmed cases shared for matching, built by the matching domain) whose
    ``label_indices`` index ``syndromes``: the model's :attr:`~LoadedModel.syndromes` followed by
    syndromes known only from those cases. A syndrome's distance is its nearest face in either gallery, and
    each row says which one it came from (``source``). Without a head (an imported embedding network)
    there is no softmax: ``score`` is None, and without any gallery the ranking is empty (``"none"``).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    known = tuple(model.syndromes)
    names = tuple(syndromes) if syndromes is not None else known
    if names[:len(known)] != known:
        raise ValueError("syndromes must begin with the model's own syndromes (gallery indices refer to them)")
    probabilities, views = encode_query(model, aligned_rgb)
    galleries = [g for g in (model.gallery, extra) if g is not None]
    head = len(model.labels) if probabilities is not None else 0
    scores = np.zeros(len(names))
    scores[:head] = probabilities[:head] if probabilities is not None else 0.0
    distances = np.full(len(names), np.inf)
    rows = np.full(len(names), -1, dtype=np.int64)
    owner = np.full(len(names), -1, dtype=np.int64)
    for g_index, gallery in enumerate(galleries):
        best, row = _distances(gallery, len(names), views, top_k)
        closer = best < distances
        distances[closer], rows[closer], owner[closer] = best[closer], row[closer], g_index
    if galleries:
        candidates = np.flatnonzero(np.isfinite(distances) | (np.arange(len(names)) < head))
    else:
        candidates = np.arange(head)
    order = candidates[rank_classes(scores[candidates], distances[candidates] if galleries else None)][:top_k]
    ranked = []
    for rank, c in enumerate(order.tolist(), start=1):
        label = names[c]
        gallery = galleries[owner[c]] if owner[c] >= 0 else None
        row = int(rows[c])
        ranked.append(Prediction(
            rank=rank,
            syndrome_id=label.id,
            name=label.name,
            omim=label.omim,
            score=float(scores[c]) if c < head else None,
            distance=float(distances[c]) if gallery is not None else None,
            image_id=str(gallery.image_ids[row]) if gallery is not None else None,
            subject_id=str(gallery.subject_ids[row]) if gallery is not None and gallery.subject_ids is not None
            else None,
            source=gallery.source(row) if gallery is not None else None,
        ))
    return PredictionResult(
        embedding=views[0].astype(np.float32),
        softmax=[float(p) for p in probabilities] if probabilities is not None else [],
        ranked=ranked,
        model_version=model.version,
        ranking="gallery" if galleries else ("softmax" if head else "none"),
        out_of_distribution=assess(model.card, model.gallery, views[0]),
        views=views.astype(np.float32),
    )
