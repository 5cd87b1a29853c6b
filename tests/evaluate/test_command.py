"""``--seeds N``: the benchmark sets of seeds seed … seed+N−1 pooled, so intervals cover faces of every seed."""

from __future__ import annotations

import numpy as np

from app.evaluate.command import EvaluationSpec, build_benchmarks


def test_seeds_pool_the_benchmark_sets_of_consecutive_seeds() -> None:
    one = build_benchmarks(EvaluationSpec(per_class=1, classes=("syn_a", "syn_d"), seed=1000).resolved())
    both = build_benchmarks(EvaluationSpec(per_class=1, classes=("syn_a", "syn_d"), seed=1000, seeds=2).resolved())
    assert both.spec["seeds"] == [1000, 1001]
    assert len(both.faces) == 2 * len(one.faces) == 4
    ids = [f.image_id for f in both.faces]
    assert ids[:2] == [f"s1000-{f.image_id}" for f in one.faces] and all(i.startswith("s1001-") for i in ids[2:])
    assert np.array_equal(both.faces[0].crop, one.faces[0].crop)  # seed 1000's faces are the single run's
    assert not np.array_equal(both.faces[2].crop, both.faces[0].crop)  # seed 1001 brings other faces
