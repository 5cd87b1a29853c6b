"""Nearest-neighbour search over unit embeddings: exact below a size, a faiss IVF index above it.

Rows and queries are unit vectors, so cosine similarity is the inner product and "nearest" means the
largest score. :class:`NearestIndex` answers ``search(queries, k)`` with the top ``k`` rows per query.

* **Exact** (below :data:`APPROXIMATE_FROM` rows of 512 floats): one float32 matrix product and an
  ``argpartition``, ties broken by the lower row, so the answer is deterministic. It keeps a reference to
  the rows it was given (no copy when they are C-contiguous float32), so a gallery is not stored twice.
* **Approximate** (from that size on): a faiss ``IndexIVFFlat`` under the inner product — k-means cells
  over the rows (``nlist`` ≈ 2·√n, trained on a seeded sample of at most 64 rows per cell), a query scans
  the ``nprobe`` = :data:`NPROBE` nearest cells in full (flat float32 vectors, so every returned score is
  an exact inner product; only rows in unvisited cells can be missed). faiss holds the only copy of the
  rows then.

Why these numbers (``bench/bench_matching.py``; its run in
``bench/results/bench_matching-amd-epyc-2026-12-07.txt``: 2 threads on the shared 2-core AMD EPYC at a load
average of 11–14; clustered 512-d rows; per-query times):

* exact float32: p50/p95 17/42 ms at 10k, 74/134 ms at 100k, 703/1207 ms at 1M — linear in the rows (a
  memory-bound scan), so 1M is out of reach on 2 cores, while 100k stays exact with no recall question
  (p95 91 ms in the earlier run at load 7; 134 ms at load 12 is the load's, p50 74 ms);
* IVF (nlist 2048, nprobe 32) at 1M: built in 199 s, p50/p95 7.9/14 ms (1/80 of exact), recall@10 against
  exact 1.000 for noisy copies of stored rows and for fresh draws around the clusters; at 100k (nlist 512)
  p95 22 ms, recall 0.9995 / 0.9985. nprobe is generous: in an exploratory run at 100k (nlist 1024, 200
  queries) nprobe 4 already recalled every top-10 row; real embeddings are less cleanly clustered than the
  bench's, and 32 cells cost milliseconds.
* HNSW (``IndexHNSWFlat``, M=32, efConstruction 40, efSearch 128: efSearch 64 gave 0.988 on fresh draws in
  the exploratory run) at 100k: as fast to query (p95 17 ms) at the same recall, but built in 157 s against
  IVF's 20 s (≈ 8×; at 1M roughly half an hour on 2 cores, extrapolated, not measured) and with more memory
  for its links. So IVF.
* The switch at 150k rows keeps every gallery up to the issue's 100k exact (≈ 1.5× the 100k scan at most)
  and leaves the scans that grow towards seconds to the index. Below a few tens of thousands of rows IVF's
  recall also drops (0.77–0.81 at 10k, where the bench's clusters hold 5 rows and half of each top 10 is
  noise-level neighbours), another reason to stay exact there.

Building the IVF index takes about three minutes at 1M rows on 2 cores, so a model gallery's index is built
when the gallery is written and saved beside it (:meth:`NearestIndex.save`, :meth:`NearestIndex.load`; which
file, and when it is stale, is :mod:`app.nets.gallery_index`'s business); an index nobody saved is built on
first use.

The threshold counts floats scanned (rows × dim, scaled to 512-d rows), so a multi-view gallery (a row is
the concatenation of its V views) switches at 150k/V rows.

An index that lives for a single request should pass ``approximate_from=None``: training costs far more
than the one exact scan it would save.

``candidates`` serves callers that report distances computed their own way (float64, by their own
formula): on the exact path it returns every row whose float32 score is within :func:`tolerance` of the
k-th best, a superset of the top k under any more precise arithmetic, so re-scoring the candidates and
taking the first k gives exactly the result of a full float64 sort.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["APPROXIMATE_FROM", "NPROBE", "IndexFileError", "NearestIndex", "ivf_cells", "read_index_header",
           "tolerance"]

#: rows of 512 floats from which an index turns approximate (see the module docstring)
APPROXIMATE_FROM = 150_000
#: IVF cells scanned per query (see the module docstring: recall@10 1.000 at 1M, p95 14 ms)
NPROBE = 32
#: rows per k-means training sample, per cell (faiss warns below 39)
TRAIN_PER_CELL = 64
_REFERENCE_DIM = 512
_QUERY_BLOCK_BYTES = 64 * 2**20  # one (queries × rows) float32 score block at most
#: first bytes of a saved index: a JSON header (its length as 4 little-endian bytes) follows, then faiss's own
#: serialisation (``faiss.write_index``), so a reader learns what the index was built from before loading it
INDEX_MAGIC = b"GLSEARCH"
INDEX_FORMAT = "gestaltlens-ivf/1"
_MAX_HEADER = 1 << 20


class IndexFileError(ValueError):
    """A saved index that cannot be used: not an index file, truncated, or not what its header says."""


def tolerance(dim: int) -> float:
    """An upper bound, doubled, on the float32 rounding error of a dot product of two unit vectors in
    ``dim`` dimensions (γ_d ≈ d·2⁻²⁴ for the sum, plus a few units for normalising): scores closer than
    this to each other may swap order under exact arithmetic."""
    return (dim + 16) * 2.0**-22


def ivf_cells(rows: int) -> int:
    """IVF cell count for ``rows``: about 2·√n (a power of two), at least 64."""
    return max(64, 2 ** round(math.log2(2.0 * math.sqrt(max(rows, 1)))))


class NearestIndex:
    """Top-k inner-product search over unit rows of ``dim`` floats; exact until the index is large."""

    def __init__(self, dim: int = _REFERENCE_DIM, *, approximate_from: int | None = APPROXIMATE_FROM,
                 nprobe: int = NPROBE, seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        # the row count at which this index turns approximate (floats scanned, scaled to 512-d rows)
        self._switch = None if approximate_from is None else max(1, approximate_from * _REFERENCE_DIM // dim)
        self.nprobe = nprobe
        self.seed = seed
        self._blocks: list[np.ndarray] = []  # exact path: the rows, in order
        self._rows = 0
        self._ivf: Any = None  # approximate path: a faiss IndexIVFFlat holding every row
        self._trained_on = 0

    def __len__(self) -> int:
        return self._rows

    @property
    def approximate(self) -> bool:
        return self._ivf is not None

    @property
    def approximate_at(self) -> int | None:
        """The row count from which this index is approximate (None: it always stays exact)."""
        return self._switch

    @property
    def nbytes(self) -> int:
        """Memory of the stored rows (and, when approximate, of the cell centroids and row ids)."""
        if self._ivf is None:
            return sum(b.nbytes for b in self._blocks)
        return self._rows * (self.dim * 4 + 8) + self._ivf.nlist * self.dim * 4

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (n, dim), which must already have norm 1 (checked loosely: this is not normalised
        here, because callers keep their unit rows and re-score candidates from them)."""
        rows = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows must be (n, {self.dim}), got shape {rows.shape}")
        if rows.shape[0] == 0:
            return
        norms = np.linalg.norm(rows, axis=1)
        if not np.isfinite(norms).all() or np.abs(norms - 1.0).max() > 1e-3:
            raise ValueError("rows must be finite unit vectors (normalise them first)")
        if self._ivf is not None:
            self._ivf.add(rows)
            self._rows += rows.shape[0]
            if self._rows >= 4 * self._trained_on:  # cells trained on a quarter of the rows: re-train
                self._build(self._all_rows())
            return
        self._blocks.append(rows)
        self._rows += rows.shape[0]
        if self._switch is not None and self._rows >= self._switch:
            self._build(self._all_rows())

    def _all_rows(self) -> np.ndarray:
        if self._ivf is None:
            return self._blocks[0] if len(self._blocks) == 1 else np.concatenate(self._blocks)
        self._ivf.make_direct_map()
        return self._ivf.reconstruct_n(0, self._ivf.ntotal)

    def _build(self, rows: np.ndarray) -> None:
        import faiss  # only the large indexes need it

        cells = ivf_cells(rows.shape[0])
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, cells, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = self.seed
        rng = np.random.default_rng(self.seed)
        sample = min(rows.shape[0], TRAIN_PER_CELL * cells)
        picks = np.sort(rng.choice(rows.shape[0], sample, replace=False))
        ivf.train(rows[picks])
        ivf.add(rows)
        ivf.nprobe = min(self.nprobe, cells)
        self._ivf, self._blocks, self._trained_on, self._rows = ivf, [], rows.shape[0], rows.shape[0]

    def save(self, path: Path, header: dict[str, Any] | None = None) -> Path:
        """Write the approximate index to ``path`` atomically: a temporary file in the same folder, fsynced,
        then renamed, so a reader sees the old file or the complete new one, and a failure leaves neither a
        partial file nor a temporary one. ``header`` (JSON) is stored before the faiss data, with the index's
        own parameters; :func:`read_index_header` reads it without loading the index. Only an approximate
        index is saved: an exact one is its rows, which the caller already has."""
        import faiss

        if self._ivf is None:
            raise ValueError("only an approximate index is saved (an exact index is the rows themselves)")
        path = Path(path)
        meta = {**(header or {}), "format": INDEX_FORMAT, "dim": self.dim, "rows": self._rows,
                "cells": int(self._ivf.nlist), "nprobe": self.nprobe, "seed": self.seed,
                "trained_on": self._trained_on}
        encoded = json.dumps(meta, sort_keys=True).encode("utf-8")
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(INDEX_MAGIC + struct.pack("<I", len(encoded)) + encoded)
                faiss.write_index(self._ivf, faiss.PyCallbackIOWriter(out.write))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: Path) -> tuple[NearestIndex, dict[str, Any]]:
        """(the index, its header) from a file :meth:`save` wrote; :class:`IndexFileError` when the file is
        not one, is cut short, or holds another index than its header describes."""
        import faiss

        path = Path(path)
        with path.open("rb") as handle:
            header = _read_header(handle, path.name)
            try:
                ivf = faiss.read_index(faiss.PyCallbackIOReader(handle.read))  # already its own class
            except RuntimeError as exc:  # faiss reports a short or garbled file as a RuntimeError
                raise IndexFileError(f"{path.name}: faiss cannot read it ({str(exc).splitlines()[0][:200]})") from exc
        if (not isinstance(ivf, faiss.IndexIVFFlat) or ivf.metric_type != faiss.METRIC_INNER_PRODUCT
                or ivf.d != header["dim"] or ivf.ntotal != header["rows"] or ivf.nlist != header["cells"]):
            raise IndexFileError(f"{path.name}: the faiss data is not the inner-product IVF index its header "
                                 "describes")
        index = cls(header["dim"], approximate_from=1, nprobe=header["nprobe"], seed=header["seed"])
        ivf.nprobe = min(index.nprobe, int(ivf.nlist))
        index._ivf, index._rows, index._trained_on = ivf, int(ivf.ntotal), int(header["trained_on"])
        return index, header

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (m, {self.dim}), got shape {q.shape}")
        return q

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(m, n) float32 inner products with every row (the exact path's full scan; exact index only)."""
        if self._ivf is not None:
            raise RuntimeError("an approximate index does not scan every row; use search()")
        q = self._queries(queries)
        if not self._blocks:
            return np.zeros((q.shape[0], 0), dtype=np.float32)
        return np.concatenate([q @ block.T for block in self._blocks], axis=1)

    def _score_blocks(self, q: np.ndarray):
        """(start, (b, n) scores) over blocks of queries, so a many-query search stays in bounded memory."""
        step = max(1, _QUERY_BLOCK_BYTES // max(1, 4 * self._rows))
        for start in range(0, q.shape[0], step):
            yield start, self.scores(q[start:start + step])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (m, k) float32, rows (m, k) int64), best first; ties by the lower row on the exact path.
        Fewer than k rows found (a small index, or cells that hold fewer): padded with -inf and -1."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = self._queries(queries)
        if self._ivf is not None:
            scores, rows = self._ivf.search(q, k)
            missing = rows < 0
            scores[missing] = -np.inf
            return scores.astype(np.float32), rows.astype(np.int64)
        out_scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        out_rows = np.full((q.shape[0], k), -1, dtype=np.int64)
        for start, block in self._score_blocks(q):
            for i, row in enumerate(block):
                best = _top(row, k)
                out_rows[start + i, :len(best)] = best
                out_scores[start + i, :len(best)] = row[best]
        return out_scores, out_rows

    def candidates(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """Per query, ascending rows that contain the top k: on the exact path every row within
        :func:`tolerance` of the k-th best float32 score (so re-scoring them more precisely and keeping the
        first k is exact); on the approximate path the index's top k."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = self._queries(queries)
        if self._ivf is not None:
            return [np.sort(rows[rows >= 0]) for rows in self.search(q, k)[1]]
        if self._rows <= k:
            return [np.arange(self._rows, dtype=np.int64) for _ in range(q.shape[0])]
        slack = tolerance(self.dim)
        out: list[np.ndarray] = []
        for _, block in self._score_blocks(q):
            for row in block:
                kth = row[np.argpartition(-row, k - 1)[k - 1]]
                out.append(np.flatnonzero(row >= kth - slack))
        return out


def read_index_header(path: Path) -> dict[str, Any]:
    """The header of a saved index (cheap: the faiss data is not read); :class:`IndexFileError` when the
    file is not a saved index."""
    path = Path(path)
    with path.open("rb") as handle:
        return _read_header(handle, path.name)


def _read_header(handle: Any, name: str) -> dict[str, Any]:
    start = handle.read(len(INDEX_MAGIC) + 4)
    if len(start) < len(INDEX_MAGIC) + 4 or not start.startswith(INDEX_MAGIC):
        raise IndexFileError(f"{name} is not a saved search index")
    (size,) = struct.unpack("<I", start[len(INDEX_MAGIC):])
    if size > _MAX_HEADER:
        raise IndexFileError(f"{name}: header of {size} bytes")
    try:
        header = json.loads(handle.read(size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexFileError(f"{name}: the header is not JSON ({exc})") from exc
    required = {"format": str, "dim": int, "rows": int, "cells": int, "nprobe": int, "seed": int, "trained_on": int}
    if not isinstance(header, dict) or any(not isinstance(header.get(k), t) for k, t in required.items()):
        raise IndexFileError(f"{name}: the header lacks the index's parameters")
    if header["format"] != INDEX_FORMAT:
        raise IndexFileError(f"{name} has format {header['format']!r}, this version reads {INDEX_FORMAT!r}")
    return header


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k largest scores, best first, ties by the lower row (all tied rows at the k-th score
    compete by row, not by where argpartition happened to put them)."""
    if scores.shape[0] <= k:
        return np.argsort(-scores, kind="stable")
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    tied = np.flatnonzero(scores >= kth)  # ascending rows: a stable sort breaks ties by row
    return tied[np.argsort(-scores[tied], kind="stable")[:k]]
