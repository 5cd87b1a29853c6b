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

Building the IVF index happens on first use (a gallery's first ranking): about three minutes at 1M rows
on 2 cores, once per loaded gallery.

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

import math
from typing import Any

import numpy as np

__all__ = ["APPROXIMATE_FROM", "NPROBE", "NearestIndex", "ivf_cells", "tolerance"]

#: rows of 512 floats from which an index turns approximate (see the module docstring)
APPROXIMATE_FROM = 150_000
#: IVF cells scanned per query (see the module docstring: recall@10 1.000 at 1M, p95 14 ms)
NPROBE = 32
#: rows per k-means training sample, per cell (faiss warns below 39)
TRAIN_PER_CELL = 64
_REFERENCE_DIM = 512
_QUERY_BLOCK_BYTES = 64 * 2**20  # one (queries × rows) float32 score block at most


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


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k largest scores, best first, ties by the lower row (all tied rows at the k-th score
    compete by row, not by where argpartition happened to put them)."""
    if scores.shape[0] <= k:
        return np.argsort(-scores, kind="stable")
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    tied = np.flatnonzero(scores >= kth)  # ascending rows: a stable sort breaks ties by row
    return tied[np.argsort(-scores[tied], kind="stable")[:k]]
