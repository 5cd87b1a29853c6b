"""The gallery: embeddings of known cases that GestaltMatcher-Arc-style ranking compares a query with.

``gallery.npz`` holds ``embeddings`` (N, 512) float32 or float16 — or (N, V, 512) for an ensemble with
test-time augmentation, one embedding per view in the order of :mod:`app.nets.ensemble` —
``labels`` (N,) syndrome ids (str),
``image_ids`` (N,) str and optionally ``subject_ids`` (N,) str. It is read with ``allow_pickle=False`` so
a gallery file cannot run code; string columns must therefore be numpy unicode arrays, not objects.

On load every row is L2-normalised once (cosine distance is then a dot product) and mapped to the class
index of its syndrome, so ranking a query is one matrix-vector product. A gallery label that the model's
labels.json does not know, a wrong embedding size, ragged columns or non-finite / zero embeddings are
refused: they would otherwise produce a ranking that silently ignores or misnames cases.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.nets.card import Label
from app.nets.errors import ModelFolderError
from app.nets.iresnet import EMBEDDING_DIM

__all__ = ["Gallery", "read_gallery", "write_gallery"]


@dataclass(frozen=True, eq=False)
class Gallery:
    """Gallery rows, aligned by position. ``unit`` is ``embeddings`` L2-normalised (float32)."""

    embeddings: np.ndarray  # (N, 512) float32, as stored (cast from float16 if needed); view 0 of (N, V, 512)
    unit: np.ndarray  # (N, 512) float32, each row of norm 1 (view 0)
    labels: np.ndarray  # (N,) str syndrome ids
    label_indices: np.ndarray  # (N,) int64 class index of each row in labels.json
    image_ids: np.ndarray  # (N,) str
    subject_ids: np.ndarray | None  # (N,) str, or None when not recorded
    unit_views: np.ndarray | None = None  # (V, N, 512) float32 unit rows per view; None for one view
    #: where each row's face comes from: "gallery" (the model folder's file) or "case" (a confirmed case
    #: shared for matching); None means every row is a gallery image
    sources: np.ndarray | None = None
    #: built for one request (the shared cases, read from the database each time): its search index stays
    #: exact, because training an approximate one would cost more than the single scan it saves
    transient: bool = False

    def source(self, row: int) -> str:
        return "gallery" if self.sources is None else str(self.sources[row])

    def view_stack(self) -> np.ndarray:
        """(N, V, 512) float32 unit embeddings, the shape ``build_gallery`` takes (to extend a gallery)."""
        if self.unit_views is None:
            return self.unit[:, None, :]
        return np.transpose(self.unit_views, (1, 0, 2))

    @property
    def views(self) -> int:
        return 1 if self.unit_views is None else int(self.unit_views.shape[0])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


def _string_column(archive: np.lib.npyio.NpzFile, key: str, n: int, what: str) -> np.ndarray:
    column = np.asarray(archive[key])
    if column.ndim != 1 or column.shape[0] != n:
        raise ModelFolderError(f"{what} {key} has shape {column.shape}, expected ({n},) like the embeddings")
    if column.dtype.kind not in "US":
        raise ModelFolderError(f"{what} {key} must hold strings, got dtype {column.dtype}")
    return column.astype(str)


def build_gallery(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    image_ids: Sequence[str] | np.ndarray,
    known_labels: Sequence[Label],
    subject_ids: Sequence[str] | np.ndarray | None = None,
    what: str = "gallery",
    sources: Sequence[str] | np.ndarray | None = None,
    transient: bool = False,
) -> Gallery:
    """Validate gallery columns against the model's labels and precompute what ranking needs."""
    embeddings = np.asarray(embeddings)
    unit_views = None
    if embeddings.ndim == 3 and embeddings.shape[1] >= 1:
        stacked = np.transpose(embeddings.astype(np.float32), (1, 0, 2))  # (V, N, 512)
        if stacked.shape[2] != EMBEDDING_DIM or not np.isfinite(stacked).all():
            raise ModelFolderError(f"{what} view embeddings must be finite (N, V, {EMBEDDING_DIM}) values")
        view_norms = np.linalg.norm(stacked, axis=2, keepdims=True)
        if (view_norms <= 1e-12).any():
            raise ModelFolderError(f"{what} has an all-zero view embedding")
        unit_views = (stacked / view_norms).astype(np.float32) if stacked.shape[0] > 1 else None
        embeddings = embeddings[:, 0, :]
    if embeddings.ndim != 2:
        raise ModelFolderError(f"{what} embeddings must be a (N, {EMBEDDING_DIM}) array, got shape {embeddings.shape}")
    if embeddings.shape[1] != EMBEDDING_DIM:
        raise ModelFolderError(f"{what} embeddings are {embeddings.shape[1]}-d, expected {EMBEDDING_DIM}")
    if embeddings.shape[0] == 0:
        raise ModelFolderError(f"{what} is empty; give no gallery (null) instead")
    if embeddings.dtype not in (np.float32, np.float16, np.float64):
        raise ModelFolderError(f"{what} embeddings must be float32 or float16, got {embeddings.dtype}")
    embeddings = embeddings.astype(np.float32)
    if not np.isfinite(embeddings).all():
        raise ModelFolderError(f"{what} embeddings contain NaN or infinite values")
    norms = np.linalg.norm(embeddings, axis=1)
    if (norms <= 1e-12).any():
        raise ModelFolderError(f"{what} embedding row {int(np.argmax(norms <= 1e-12))} is all zeros")
    n = embeddings.shape[0]
    labels_arr = np.asarray(labels).astype(str)
    image_arr = np.asarray(image_ids).astype(str)
    for key, column in (("labels", labels_arr), ("image_ids", image_arr)):
        if column.shape != (n,):
            raise ModelFolderError(f"{what} {key} has shape {column.shape}, expected ({n},) like the embeddings")
    index_of = {label.id: i for i, label in enumerate(known_labels)}
    unknown = sorted(set(labels_arr.tolist()) - index_of.keys())
    if unknown:
        raise ModelFolderError(f"{what} label {unknown[0]!r} is not in labels.json"
                               + (f" (nor are {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    subject_arr = None
    if subject_ids is not None:
        subject_arr = np.asarray(subject_ids).astype(str)
        if subject_arr.shape != (n,):
            raise ModelFolderError(f"{what} subject_ids has shape {subject_arr.shape}, expected ({n},)")
    source_arr = None
    if sources is not None:
        source_arr = np.asarray(sources).astype(str)
        if source_arr.shape != (n,):
            raise ModelFolderError(f"{what} sources has shape {source_arr.shape}, expected ({n},)")
    return Gallery(
        sources=source_arr,
        embeddings=embeddings,
        unit=(embeddings / norms[:, None]).astype(np.float32),
        labels=labels_arr,
        label_indices=np.array([index_of[x] for x in labels_arr.tolist()], dtype=np.int64),
        image_ids=image_arr,
        subject_ids=subject_arr,
        unit_views=unit_views,
        transient=transient,
    )


def read_gallery(path: Path, known_labels: Sequence[Label]) -> Gallery:
    """Read and validate ``gallery.npz`` (no pickles)."""
    what = path.name
    if not path.is_file():
        raise ModelFolderError(f"{what} is missing")
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in ("embeddings", "labels", "image_ids"):
                if key not in archive.files:
                    raise ModelFolderError(f"{what} has no {key!r} array")
            embeddings = np.asarray(archive["embeddings"])
            n = embeddings.shape[0] if embeddings.ndim >= 1 else 0
            labels = _string_column(archive, "labels", n, what)
            image_ids = _string_column(archive, "image_ids", n, what)
            subjects = _string_column(archive, "subject_ids", n, what) if "subject_ids" in archive.files else None
    except ModelFolderError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, io.UnsupportedOperation) as exc:
        raise ModelFolderError(f"{what} cannot be read as a numpy .npz without pickles: {exc}") from exc
    return build_gallery(embeddings, labels, image_ids, known_labels, subjects, what)


def write_gallery(
    path: Path,
    embeddings: np.ndarray,
    labels: Sequence[str],
    image_ids: Sequence[str],
    subject_ids: Sequence[str] | None = None,
    dtype: type[np.floating] = np.float32,
) -> Path:
    """Write ``gallery.npz`` with unicode string columns (readable with ``allow_pickle=False``)."""
    arrays = {
        "embeddings": np.asarray(embeddings, dtype=dtype),
        "labels": np.asarray(labels, dtype=str),
        "image_ids": np.asarray(image_ids, dtype=str),
    }
    if subject_ids is not None:
        arrays["subject_ids"] = np.asarray(subject_ids, dtype=str)
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path
