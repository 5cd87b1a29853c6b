"""Similar patients and unsolved matches through the exact index: the same rows, order and distances as
the full float64 distance matrix they replace (which needs N² memory)."""

from __future__ import annotations

import numpy as np
import pytest

from app.matching.service import closest_pairs, distance_matrix, nearest


def _cases(n: int, views: int, seed: int) -> np.ndarray:
    """(n, views, 512) raw embeddings in a few tight groups, with exact duplicates (ties) and varied norms."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((8, 512))
    base = centre[rng.integers(0, 8, n)] + 0.7 * rng.standard_normal((n, 512))
    stack = base[:, None, :] + 0.05 * rng.standard_normal((n, views, 512))
    stack[3] = stack[11]
    stack[40] = stack[11]
    return (stack * rng.uniform(0.5, 9.0, (n, 1, 1))).astype(np.float32)


@pytest.mark.parametrize("views", [1, 3])
def test_nearest_rows_are_those_of_the_full_matrix(views: int) -> None:
    stacked = _cases(300, views, seed=views)
    for q in (11, 0, 299):
        full = distance_matrix(stacked[q][None], stacked)[0]
        for limit in (1, 5, 10, 300, 400):
            want = np.argsort(full, kind="stable")[:limit]
            rows, distances = nearest(stacked[q], stacked, limit)
            np.testing.assert_array_equal(rows, want)
            np.testing.assert_allclose(distances, full[want], rtol=0, atol=1e-12)
    assert sorted(nearest(stacked[11], stacked, 3)[0].tolist()) == [3, 11, 40]  # the face and its two copies


@pytest.mark.parametrize("views", [1, 3])
def test_closest_pairs_are_those_of_the_full_matrix(views: int) -> None:
    stacked = _cases(250, views, seed=10 + views)
    full = distance_matrix(stacked, stacked)
    first, second = np.triu_indices(len(stacked), k=1)
    for threshold in (0.2, 0.5, 2.1):
        close = full[first, second] < threshold
        for limit in (1, 7, 200, 40_000):
            want = sorted(zip(full[first, second][close].tolist(), first[close].tolist(), second[close].tolist(),
                              strict=True))[:limit]
            got = closest_pairs(stacked, threshold, limit)
            assert [(i, j) for _, i, j in got] == [(i, j) for _, i, j in want]
            np.testing.assert_allclose([d for d, _, _ in got], [d for d, _, _ in want], rtol=0, atol=1e-12)
    assert closest_pairs(stacked[:1], 2.1, 5) == []
