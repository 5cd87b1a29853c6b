"""A model gallery's search index: built when the gallery is written, saved beside it, loaded with the model.

Training the approximate (faiss IVF) index of a large gallery takes minutes (≈ 3 at 1M rows on 2 cores, see
:mod:`app.nets.search`); built on first use, that would be the first clinician's wait after every server
start. So ``gestaltlens gallery build / add / remove`` build the index of a gallery at or above the size
threshold and save it next to the gallery file, named after it (``gallery-1a2b3c4d.npz`` →
``gallery-1a2b3c4d.ivf.faiss``; a hand-made ``gallery.npz`` → ``gallery.ivf.faiss``), and
:func:`app.nets.registry.load_model` loads it (:func:`prepare`). A gallery below the threshold is scanned
exactly and has no index file.

**Never a stale index.** The file's header (:meth:`~app.nets.search.NearestIndex.save`) records the sha256
of the gallery file it was built from and the row count and width of its rows. At load the gallery file
is hashed (seconds at 1M rows, against minutes of training) and an index made for other bytes is not used:
it is rebuilt, the log says why, and the new one is saved in its place when the folder is writable. A file
that cannot be read is treated the same way. The index only proposes candidate rows; distances are always
re-scored from the gallery itself (:mod:`app.nets.predict`), and ranking falls back to a full scan when the
candidates do not name enough syndromes, so even a damaged index with the right digest could cost recall,
never a wrong distance or image id.

**Nothing half-written.** The file is written to a temporary name in the model folder, fsynced and renamed
(the gallery commands' rule); a failed or interrupted build leaves no index file and no temporary one.

Each loaded gallery has one :class:`GallerySearch` (the index and the gallery's rows grouped by syndrome),
kept in a weak map so it lives as long as the gallery; :func:`gallery_search` builds one on first use when
nothing was loaded (a gallery read without :func:`prepare`, or a transient one built per request, whose
index always stays exact).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.nets import search as nearest
from app.nets.gallery import Gallery
from app.nets.search import IndexFileError, NearestIndex, read_index_header

__all__ = [
    "INDEX_SUFFIX",
    "GallerySearch",
    "gallery_digest",
    "gallery_search",
    "index_file",
    "index_rows",
    "prepare",
    "write_index",
]

INDEX_SUFFIX = ".ivf.faiss"
_log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GallerySearch:
    """A gallery's search index and its rows grouped by syndrome (for per-syndrome best scores)."""

    index: NearestIndex
    order: np.ndarray  # rows sorted by class index (stable)
    starts: np.ndarray  # where each class's run begins in ``order``
    classes: np.ndarray  # the class index of each run


_SEARCHES: weakref.WeakKeyDictionary[Gallery, GallerySearch] = weakref.WeakKeyDictionary()
_SEARCH_LOCK = threading.Lock()


def index_file(gallery_file: Path) -> Path:
    """Where the index of ``gallery_file`` lives: beside it, ``<stem>.ivf.faiss``."""
    gallery_file = Path(gallery_file)
    return gallery_file.with_name(gallery_file.stem + INDEX_SUFFIX)


def gallery_digest(gallery_file: Path) -> str:
    """sha256 of the gallery file: what an index records as the gallery it was built from."""
    digest = hashlib.sha256()
    with Path(gallery_file).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def index_rows(gallery: Gallery) -> np.ndarray:
    """(N, V·512) unit rows whose inner product with a query's views (unit, concatenated, / √V) is the mean
    cosine over views. One view: the gallery's own unit rows (no copy); several: their concatenation / √V."""
    if gallery.unit_views is None:
        return gallery.unit
    return np.concatenate(list(gallery.unit_views), axis=1) / np.float32(np.sqrt(gallery.views))


def _threshold(approximate_from: int | None) -> int:
    return nearest.APPROXIMATE_FROM if approximate_from is None else approximate_from


def _build_index(gallery: Gallery, approximate_from: int | None) -> NearestIndex:
    rows = index_rows(gallery)
    index = NearestIndex(rows.shape[1], approximate_from=None if gallery.transient else _threshold(approximate_from))
    index.add(rows)
    return index


def _search_for(gallery: Gallery, index: NearestIndex) -> GallerySearch:
    order = np.argsort(gallery.label_indices, kind="stable")
    sorted_labels = gallery.label_indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    return GallerySearch(index=index, order=order, starts=starts, classes=sorted_labels[starts])


def gallery_search(gallery: Gallery, *, approximate_from: int | None = None) -> GallerySearch:
    """The gallery's search: the one :func:`prepare` loaded, else built now (exact or approximate by the
    gallery's size, ``approximate_from`` defaulting to :data:`app.nets.search.APPROXIMATE_FROM`; always
    exact for a transient gallery) and kept. Two threads racing to build it keep the first."""
    with _SEARCH_LOCK:
        found = _SEARCHES.get(gallery)
        if found is not None:
            return found
    found = _search_for(gallery, _build_index(gallery, approximate_from))
    with _SEARCH_LOCK:
        return _SEARCHES.setdefault(gallery, found)


def _install(gallery: Gallery, index: NearestIndex) -> GallerySearch:
    found = _search_for(gallery, index)
    with _SEARCH_LOCK:
        _SEARCHES[gallery] = found
    return found


def write_index(gallery: Gallery, gallery_file: Path, *, approximate_from: int | None = None,
                digest: str | None = None) -> Path | None:
    """Build the index of ``gallery`` (read from, or just written to, ``gallery_file``) and save it beside
    the file, when the gallery is large enough for the approximate index; returns the file, or None for a
    gallery that is scanned exactly (nothing is written then). ``digest`` is the file's sha256 when the
    caller has it. The built index also serves this process's rankings of ``gallery``."""
    started = time.perf_counter()
    index = _build_index(gallery, approximate_from)
    if not index.approximate:
        return None
    path = index.save(index_file(gallery_file), _header(gallery, gallery_file, digest, time.perf_counter() - started))
    _install(gallery, index)
    return path


def _header(gallery: Gallery, gallery_file: Path, digest: str | None, seconds: float) -> dict[str, Any]:
    return {"gallery": Path(gallery_file).name, "gallery_sha256": digest or gallery_digest(gallery_file),
            "views": gallery.views, "build_seconds": round(seconds, 1)}


def describe(path: Path) -> dict[str, Any]:
    """What a gallery's provenance says about its saved index (file, cells, probes, the gallery digest)."""
    header = read_index_header(path)
    return {"file": Path(path).name, "kind": "faiss IndexIVFFlat, inner product", "rows": header["rows"],
            "cells": header["cells"], "nprobe": header["nprobe"], "gallery_sha256": header["gallery_sha256"],
            "build_seconds": header.get("build_seconds")}


def prepare(gallery: Gallery, gallery_file: Path, *, approximate_from: int | None = None,
            save: bool = True) -> str:
    """At model load: use the saved index of ``gallery`` if it was built from these very bytes, else
    rebuild it (and, with ``save``, save it in place, best effort) when the gallery needs one. Returns
    what happened: ``"loaded"``, ``"rebuilt"`` or ``"exact"`` (no index needed, none used)."""
    gallery_file = Path(gallery_file)
    path = index_file(gallery_file)
    dim = index_rows(gallery).shape[1]
    switch = None if gallery.transient else \
        NearestIndex(dim, approximate_from=_threshold(approximate_from)).approximate_at
    needed = switch is not None and len(gallery) >= switch
    if not needed and not path.is_file():
        return "exact"
    started = time.perf_counter()
    digest = gallery_digest(gallery_file)  # before building: a save records the bytes the gallery was read from
    why = None
    if path.is_file():
        try:
            header = read_index_header(path)
            if header.get("gallery_sha256") != digest:
                why = (f"it was built for gallery sha256 {str(header.get('gallery_sha256'))[:12]}…, "
                       f"{gallery_file.name} is {digest[:12]}…")
            elif header["rows"] != len(gallery) or header["dim"] != dim:
                why = f"it holds {header['rows']} rows of {header['dim']}, the gallery {len(gallery)} of {dim}"
            else:
                index, _ = NearestIndex.load(path)
                _install(gallery, index)
                _log.info("search index %s loaded (%d rows, %d cells) in %.1f s", path.name, len(index),
                          header["cells"], time.perf_counter() - started)
                return "loaded"
        except (IndexFileError, OSError) as exc:
            why = f"it cannot be read ({exc})"
    if not needed:
        _log.warning("search index %s is not used: %s; %s has %d rows, below the approximate index's "
                     "threshold, so it is scanned exactly", path.name, why, gallery_file.name, len(gallery))
        return "exact"
    if why:
        _log.warning("search index %s is stale or damaged: %s. Rebuilding it now (minutes for a million rows).",
                     path.name, why)
    else:
        _log.warning("%s has %d rows and no saved search index (%s). Building it now (minutes for a million "
                     "rows); `gestaltlens gallery build/add/remove` save one when they write the gallery.",
                     gallery_file.name, len(gallery), path.name)
    started = time.perf_counter()
    index = _build_index(gallery, approximate_from)
    _install(gallery, index)
    seconds = time.perf_counter() - started
    _log.info("search index for %s built in %.1f s", gallery_file.name, seconds)
    if save:
        _save_best_effort(gallery, gallery_file, index, _header(gallery, gallery_file, digest, seconds))
    return "rebuilt"


def _save_best_effort(gallery: Gallery, gallery_file: Path, index: NearestIndex, header: dict[str, Any]) -> None:
    """Save an index rebuilt at load, so the next start loads it; a read-only folder only costs a warning.
    An index whose gallery file a gallery command removed meanwhile (it replaced the gallery) is removed."""
    path = index_file(gallery_file)
    try:
        index.save(path, header)
    except OSError as exc:
        _log.warning("search index %s could not be saved (%s); it will be rebuilt at the next start",
                     path.name, exc)
        return
    if not gallery_file.is_file():
        path.unlink(missing_ok=True)
        return
    _log.info("search index saved as %s", path.name)
