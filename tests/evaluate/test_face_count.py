"""The default face count from the interval width it buys: subsampling per-face values, and the choice."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluate import face_count


def _card(labels: list[str], columns: dict[str, dict[str, list[float]]]) -> dict:
    methods = sorted({m for by_method in columns.values() for m in by_method})
    rows = [{"image_id": f"f{i}", "label": label,
             "methods": {m: {metric: by_method[m][i] for metric, by_method in columns.items() if m in by_method}
                         for m in methods}}
            for i, label in enumerate(labels)]
    return {"methods": methods, "per_image": rows}


def test_per_face_values_read_every_numeric_column_of_every_method() -> None:
    labels = ["a", "b", "a", "b"]
    card = _card(labels, {"mass": {"x": [0.1, 0.2, 0.3, 0.4], "y": [0.5] * 4}, "pointing": {"x": [True, False] * 2,
                                                                                             "y": [1, 1, 0, 0]}})
    got_labels, values = face_count.per_face_values(card)
    assert got_labels == labels
    assert values["mass"]["x"].tolist() == [0.1, 0.2, 0.3, 0.4]
    assert values["pointing"]["x"].tolist() == [1.0, 0.0, 1.0, 0.0]  # the pointing game's booleans as 0/1
    card["per_image"][2]["methods"]["x"].pop("mass")  # an older run without the column for one face
    assert "x" not in face_count.per_face_values(card)[1]["mass"]
    with pytest.raises(ValueError, match="per-face"):
        face_count.per_face_values({"methods": ["x"], "per_image": []})


def test_half_width_shrinks_as_one_over_root_n_and_is_zero_for_a_constant_column() -> None:
    rng = np.random.default_rng(3)
    labels = [c for _ in range(40) for c in "abcd"]  # 40 faces of each of 4 syndromes
    values = {"mass": {"noisy": rng.normal(0.3, 0.1, size=len(labels)), "flat": np.full(len(labels), 0.2)}}
    widths = face_count.half_widths(labels, values, [4, 16], draws=20, seed=1)
    assert widths[4]["mass"]["flat"] == widths[16]["mass"]["flat"] == 0.0
    narrow, wide = widths[16]["mass"]["noisy"], widths[4]["mass"]["noisy"]
    assert wide / narrow == pytest.approx(2.0, rel=0.2)  # 4× the faces: half the width
    assert narrow == pytest.approx(1.96 * 0.1 / np.sqrt(64), rel=0.2)  # the normal interval of a mean, σ/√n
    with pytest.raises(ValueError, match="smallest syndrome"):
        face_count.half_widths(labels, values, [41])


def test_the_choice_is_the_smallest_count_whose_median_method_meets_every_target() -> None:
    widths = {1: {"mass": {"x": 0.09, "y": 0.12, "z": 0.2}, "gap": {"x": 0.4, "y": 0.3, "z": 0.3}},
              2: {"mass": {"x": 0.06, "y": 0.04, "z": 0.2}, "gap": {"x": 0.2, "y": 0.3, "z": 0.3}},  # median 0.06
              3: {"mass": {"x": 0.05, "y": 0.03, "z": 0.2}, "gap": {"x": 0.2, "y": 0.25, "z": 0.3}},
              4: {"mass": {"x": 0.04, "y": 0.03, "z": 0.1}, "gap": {"x": 0.1, "y": 0.2, "z": 0.2}}}
    choice = face_count.choose_face_count(widths, classes=8, goals={"mass": 0.05, "gap": 0.25})
    assert (choice.per_class, choice.faces) == (3, 24)  # z, the widest, never meets 0.05: it does not decide
    assert choice.typical[2]["mass"] == 0.06 and choice.widest[2]["mass"] == ("z", 0.2)
    assert "| 24 (3) | 0.050 | 0.200 (z) | 0.250 | 0.300 (z) | yes |" in choice.table()
    assert face_count.choose_face_count(widths, classes=8, goals={"mass": 0.01}).per_class is None
    with pytest.raises(ValueError, match="no per-face values for rank"):
        face_count.choose_face_count(widths, classes=8, goals={"rank": 0.05})


def test_targets_are_half_the_distance_each_column_must_resolve() -> None:
    labels = ["a", "b"] * 3
    card = _card(labels, {"mass": {"x": [0.2] * 6}, "deletion_gap": {"x": [1.0] * 6, "y": [-3.0] * 6,
                                                                     "z": [0.5] * 6}})
    card["chance"] = {"area_share": {"mean": 0.08}, "centre_prior": {"mass": {"mean": 0.16}}}
    goals = face_count.targets(card)
    assert goals == {"mass": pytest.approx(0.04), "deletion_gap": pytest.approx(0.5)}  # median |gap| 1.0
    pool = face_count.pool_values(card)  # what bench/results keeps: the columns and the reference levels
    assert face_count.targets(pool) == goals
    assert face_count.per_face_values(pool)[1]["deletion_gap"]["y"].tolist() == [-3.0] * 6


def test_the_default_face_count_is_the_one_the_committed_pool_run_chooses() -> None:
    """The default rests on a measurement: 48 faces of the demo model (bench/results), subsampled."""
    import json
    from pathlib import Path

    from app.evaluate.command import EvaluationSpec

    pool = json.loads((Path(__file__).parents[2] / "bench" / "results" /
                       "face_count_pool-amd-epyc-2026-12-07.json").read_text(encoding="utf-8"))
    labels, values = face_count.per_face_values(pool)
    assert len(labels) == 48 and len(values["mass"]) == 10
    widths = face_count.half_widths(labels, {m: values[m] for m in face_count.KEY_METRICS}, [1, 2, 3], draws=30)
    choice = face_count.choose_face_count(widths, classes=8, goals=face_count.targets(pool))
    assert choice.per_class == face_count.DEFAULT_PER_CLASS == EvaluationSpec().per_class
    assert choice.typical[1]["mass"] > choice.targets["mass"]  # 8 faces would not do
