"""Nearest-neighbour search: exact below the threshold, faiss IVF above it, and gallery ranking through it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.nets import search
from app.nets.card import Label
from app.nets.gallery import Gallery, build_gallery
from app.nets.predict import _distances, gallery_search, nearest_per_class, rank_classes, view_distances
from app.nets.predict import _unit as _unit64
from app.nets.search import NearestIndex, tolerance


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = 512, centres: int = 200, seed: int = 0, spread: float = 0.8) -> np.ndarray:
    """Unit rows around seeded centres (the bench's generator, smaller): neighbours are not a tie of noise."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((centres, dim)).astype(np.float32)
    rows = centre[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, dim), dtype=np.float32)
    return _unit(rows)


def reference_top(rows: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Top k by float64 score, ties by the lower row: the definition the exact path must meet."""
    scores = rows.astype(np.float64) @ query.astype(np.float64)
    return np.lexsort((np.arange(len(rows)), -scores))[:k]


def test_exact_search_returns_the_exact_top_k_with_ties_by_row() -> None:
    rows = clustered(3000, seed=1)
    rows[100] = rows[2000]  # an exact duplicate: the lower row must come first
    rows[7] = rows[2000]
    index = NearestIndex(512)
    index.add(rows[:1000])
    index.add(rows[1000:])  # two blocks: rows keep their order across adds
    assert not index.approximate and len(index) == 3000
    queries = np.concatenate([rows[[2000, 5, 2999]], clustered(5, seed=9)])
    scores, found = index.search(queries, 10)
    for q, query in enumerate(queries):
        np.testing.assert_array_equal(found[q], reference_top(rows, query, 10))
        np.testing.assert_allclose(scores[q], rows[found[q]] @ query, rtol=1e-6, atol=1e-6)
    assert found[0][:3].tolist() == [7, 100, 2000]


def test_a_small_index_pads_and_rejects_bad_input() -> None:
    index = NearestIndex(512)
    index.add(clustered(3))
    scores, found = index.search(clustered(1, seed=4), 5)
    assert found[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    assert sorted(found[0, :3].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="unit"):
        index.add(np.ones((1, 512), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(n, 512\)"):
        index.add(np.ones((1, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="k must"):
        index.search(clustered(1), 0)


def test_exact_candidates_survive_float64_rescoring() -> None:
    """Rows closer than the float32 rounding error at the k-th place are all candidates, so re-scoring
    them in float64 and keeping the first k equals a full float64 sort."""
    rng = np.random.default_rng(3)
    query = clustered(1, seed=11)[0]
    base = clustered(2000, seed=12)
    # 40 rows whose scores differ from the 10th best by less than float32 can tell apart
    near = base[np.argsort(-(base @ query))[9]]
    base[1000:1040] = _unit(near + 1e-7 * rng.standard_normal((40, 512), dtype=np.float32))
    index = NearestIndex(512)
    index.add(base)
    candidates = index.candidates(query[None], 10)[0]
    assert np.all(np.diff(candidates) > 0) and len(candidates) >= 10
    rescored = candidates[np.lexsort((candidates, -(base[candidates].astype(np.float64) @ query)))][:10]
    np.testing.assert_array_equal(rescored, reference_top(base, query, 10))
    assert tolerance(512) < 2e-4  # the widening stays tiny: a handful of extra rows, not a scan


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / exact.shape[1]
                          for a, b in zip(found, exact, strict=True)]))


def test_the_faiss_path_recalls_the_exact_top_10() -> None:
    """20k clustered rows through IVF: recall@10 against exact ≥ 0.99 for re-photographed faces (noisy
    copies of stored rows) and new faces of known clusters (fresh draws)."""
    rows = clustered(20_000, centres=400, seed=5)
    exact = NearestIndex(512, approximate_from=None)
    exact.add(rows)
    approximate = NearestIndex(512, approximate_from=10_000)
    approximate.add(rows)
    assert approximate.approximate and len(approximate) == 20_000
    rng = np.random.default_rng(6)
    copies = _unit(rows[rng.integers(0, 20_000, 100)] + 0.3 / np.sqrt(512) * rng.standard_normal((100, 512)))
    centre = np.random.default_rng(5).standard_normal((400, 512)).astype(np.float32)  # clustered()'s centres
    fresh = _unit(centre[rng.integers(0, 400, 100)] + 0.8 * rng.standard_normal((100, 512), dtype=np.float32))
    for queries in (copies, fresh):
        _, truth = exact.search(queries, 10)
        scores, found = approximate.search(queries, 10)
        assert _recall(found, truth) >= 0.99
        hit = found >= 0
        np.testing.assert_allclose(scores[hit], np.einsum("qd,qkd->qk", queries, rows[found])[hit], atol=1e-5)


def test_an_index_turns_approximate_when_it_grows_and_keeps_every_row() -> None:
    rows = clustered(6000, centres=60, seed=8)
    index = NearestIndex(512, approximate_from=1000)
    index.add(rows[:900])
    assert not index.approximate
    index.add(rows[900:1500])  # crosses the threshold: trained on the 1,500 rows
    assert index.approximate and len(index) == 1500
    index.add(rows[1500:])  # four times the training rows: trained again on all of them
    assert len(index) == 6000
    _, found = index.search(rows[[0, 1499, 5999]], 1)  # a stored row finds itself
    assert found[:, 0].tolist() == [0, 1499, 5999]


# ---------------------------------------------------------------- gallery ranking through the index

LABELS = tuple(Label(id=f"s{i}", name=f"syndrome {i}") for i in range(60))


def _gallery(n: int, views: int, seed: int, transient: bool = False) -> Gallery:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 50, n)  # 10 of the 60 syndromes have no image
    base = clustered(n, centres=50, seed=seed)
    noise = 0.3 / np.sqrt(512)  # views of one face differ a little
    stack = np.stack([_unit(base + noise * rng.standard_normal(base.shape, dtype=np.float32)) for _ in range(views)], 1)
    stack[5] = stack[17]  # equal images of different rows
    stack *= rng.uniform(0.5, 20.0, (n, 1, 1)).astype(np.float32)  # norms must not matter
    return build_gallery(stack if views > 1 else stack[:, 0], [f"s{c}" for c in labels], [f"g{i}" for i in range(n)],
                         LABELS, transient=transient)


def _full_float64(gallery: Gallery, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranking before the index (its code, kept public): every image scored in float64, each
    syndrome's nearest image."""
    distance = view_distances(gallery, views) if gallery.views > 1 else \
        1.0 - (gallery.unit.astype(np.float64) @ _unit64(views[:1])[0])
    best, row = nearest_per_class(gallery, len(LABELS), distance[None, :])
    return best[0], row[0]


@pytest.mark.parametrize("views", [1, 3])
def test_gallery_ranking_through_the_index_is_unchanged(views: int) -> None:
    gallery = _gallery(1500, views, seed=views)
    assert not gallery_search(gallery).index.approximate
    rng = np.random.default_rng(40 + views)
    softmax = rng.dirichlet(np.ones(len(LABELS)))
    queries = [gallery.unit_views[:, 17] if views > 1 else gallery.unit[17:18],  # ties with row 5
               *(rng.standard_normal((views, 512)).astype(np.float32) for _ in range(3)),
               *(_unit(gallery.view_stack()[i] + 0.05 * rng.standard_normal((views, 512), dtype=np.float32))
                 for i in (0, 300, 1499))]
    for query in queries:
        query = query * 3.0  # norms must not matter
        full_best, full_row = _full_float64(gallery, query)
        for top_k in (1, 5, 10, 60):
            best, row = _distances(gallery, len(LABELS), query, top_k)
            want = rank_classes(softmax, full_best)[:top_k]
            got = rank_classes(softmax, best)[:top_k]
            np.testing.assert_array_equal(got, want)
            finite = want[np.isfinite(full_best[want])]
            np.testing.assert_array_equal(row[finite], full_row[finite])
            np.testing.assert_allclose(best[finite], full_best[finite], rtol=0, atol=1e-12)


def test_gallery_ranking_on_the_approximate_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gallery above the threshold ranks through faiss: the same top syndromes as the full scan here,
    and a transient gallery (one request's shared cases) stays exact."""
    monkeypatch.setattr(search, "APPROXIMATE_FROM", 1000)
    gallery = _gallery(4000, 1, seed=9)
    assert gallery_search(gallery).index.approximate
    assert not gallery_search(_gallery(4000, 1, seed=9, transient=True)).index.approximate
    rng = np.random.default_rng(2)
    softmax = rng.dirichlet(np.ones(len(LABELS)))
    agree = 0
    for i in rng.integers(0, 4000, 20):
        query = _unit(gallery.unit[i:i + 1] + 0.05 * rng.standard_normal((1, 512), dtype=np.float32))
        full_best, _ = _full_float64(gallery, query)
        best, _ = _distances(gallery, len(LABELS), query, 5)
        want, got = rank_classes(softmax, full_best)[:5], rank_classes(softmax, best)[:5]
        agree += int(np.array_equal(want, got))
        assert np.isfinite(best[got]).all()  # every ranked syndrome has its nearest image
    assert agree >= 19
    # top_k beyond what the approximate candidates name: the exact scan takes over, nothing is lost
    best, _ = _distances(gallery, len(LABELS), gallery.unit[:1], 60)
    np.testing.assert_array_equal(np.isfinite(best), np.isfinite(_full_float64(gallery, gallery.unit[:1])[0]))


def test_a_saved_index_round_trips_and_other_files_are_refused(tmp_path) -> None:
    """save/load keep every answer; an exact index is not saved; a file that is not a saved index, or whose
    faiss data is cut short or is not what the header says, is refused rather than half-read."""
    rows = clustered(2000, seed=6)
    index = NearestIndex(512, approximate_from=1000, nprobe=8, seed=3)
    index.add(rows)
    path = index.save(tmp_path / "g.ivf.faiss", {"gallery_sha256": "ab" * 32})
    loaded, header = NearestIndex.load(path)
    assert header["gallery_sha256"] == "ab" * 32 and search.read_index_header(path) == header
    assert (header["rows"], header["nprobe"], header["seed"], loaded.nprobe) == (2000, 8, 3, 8)
    queries = clustered(20, seed=7)
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    assert [p.name for p in tmp_path.iterdir()] == ["g.ivf.faiss"]  # no temporary file left

    exact = NearestIndex(512)
    exact.add(rows[:10])
    with pytest.raises(ValueError, match="only an approximate"):
        exact.save(tmp_path / "e.ivf.faiss")
    (tmp_path / "n.ivf.faiss").write_bytes(b"\x93NUMPY not an index")
    with pytest.raises(search.IndexFileError, match="not a saved search index"):
        NearestIndex.load(tmp_path / "n.ivf.faiss")
    data = path.read_bytes()
    (tmp_path / "cut.ivf.faiss").write_bytes(data[:len(data) // 2])
    with pytest.raises(search.IndexFileError, match="faiss cannot read"):
        NearestIndex.load(tmp_path / "cut.ivf.faiss")
    size = int.from_bytes(data[8:12], "little")
    lying = json.loads(data[12:12 + size])
    lying["rows"] = 1999
    encoded = json.dumps(lying).encode()
    (tmp_path / "lie.ivf.faiss").write_bytes(data[:8] + len(encoded).to_bytes(4, "little") + encoded
                                             + data[12 + size:])
    with pytest.raises(search.IndexFileError, match="not the inner-product IVF index"):
        NearestIndex.load(tmp_path / "lie.ivf.faiss")
