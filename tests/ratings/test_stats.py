"""Rating statistics without a database: bootstrap intervals, distributions, region shares, ordinal alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.ratings import stats
from app.ratings.stats import RatingPoint


def test_bootstrap_interval_contains_the_mean_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(1, 6, size=40)
    first = stats.bootstrap_mean_ci(scores)
    assert first.mean == pytest.approx(scores.mean())
    assert first.low is not None and first.high is not None
    assert first.low <= first.mean <= first.high
    assert first.low < first.high
    assert stats.bootstrap_mean_ci(scores) == first  # seeded: the same ratings give the same numbers
    assert stats.bootstrap_mean_ci(scores, seed=7) != first


def test_bootstrap_interval_narrows_with_more_ratings() -> None:
    rng = np.random.default_rng(2)
    widths = []
    for n in (10, 100, 1000):
        ci = stats.bootstrap_mean_ci(rng.integers(1, 6, size=n))
        widths.append(ci.high - ci.low)
    assert widths[0] > widths[1] > widths[2]
    # Roughly 1/sqrt(n): ten times the ratings, about a third of the width.
    assert 0.2 < widths[2] / widths[1] < 0.5


def test_cluster_bootstrap_resamples_cases() -> None:
    # Two cases that disagree completely: every resample mean is a mix of 1 and 5 by whole cases.
    scores = [1, 1, 1, 5, 5, 5]
    cases = ["a", "a", "a", "b", "b", "b"]
    ci = stats.bootstrap_mean_ci(scores, cases)
    assert ci.mean == 3.0 and ci.n == 6 and ci.n_clusters == 2
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(5.0)
    # Resampling single ratings (ignoring the cases) would pretend to know much more.
    naive = stats.bootstrap_mean_ci(scores)
    assert naive.high - naive.low < ci.high - ci.low


def test_bootstrap_without_enough_data_gives_reasons() -> None:
    empty = stats.bootstrap_mean_ci([])
    assert empty.mean is None and empty.low is None and empty.reason == "no ratings"
    one_case = stats.bootstrap_mean_ci([2, 4], ["a", "a"])
    assert one_case.mean == 3.0 and one_case.low is None and "one case" in one_case.reason
    with pytest.raises(ValueError):
        stats.bootstrap_mean_ci([1, 2], ["a"])


def test_score_distribution_and_shares() -> None:
    assert stats.score_distribution([1, 3, 3, 5]) == {1: 1, 2: 0, 3: 2, 4: 0, 5: 1}
    with pytest.raises(ValueError):
        stats.score_distribution([0, 3])
    freq = stats.region_frequencies([("eyes", "nose"), ("eyes",), (), ("eyes", "eyes")], ["eyes", "nose", "ears"])
    assert freq == {"eyes": {"count": 3, "share": 0.75}, "nose": {"count": 1, "share": 0.25},
                    "ears": {"count": 0, "share": 0.0}}
    assert stats.share([True, False, False, True]) == 0.5
    assert stats.share([]) is None


def test_alpha_is_one_for_perfect_agreement() -> None:
    matrix = np.array([[1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 2], [1, 2, 3, np.nan, 5, 2]], dtype=float)
    alpha = stats.ordinal_alpha(matrix)
    assert alpha.value == pytest.approx(1.0)
    assert (alpha.n_raters, alpha.n_items) == (3, 6)


def test_alpha_matches_a_hand_computed_example() -> None:
    """Two raters, three maps: rater A gives 1, 2, 3 and rater B gives 1, 3, 3.

    Values n_1 = 2, n_2 = 1, n_3 = 3 (n = 6). Coincidences: (1,1) twice, (2,3) and (3,2) once each, (3,3) twice.
    Ordinal distances δ²(c,k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²: δ²(1,2) = 1.5² = 2.25, δ²(2,3) = 2² = 4,
    δ²(1,3) = 3.5² = 12.25. Observed Σ o·δ² = 4 + 4 = 8; expected Σ n_c·n_k·δ² over ordered pairs
    = 2·(2·1·2.25 + 2·3·12.25 + 1·3·4) = 180. α = 1 − (n − 1)·8/180 = 1 − 40/180 = 7/9.
    """
    alpha = stats.ordinal_alpha(np.array([[1, 2, 3], [1, 3, 3]], dtype=float))
    assert alpha.value == pytest.approx(7 / 9)
    assert (alpha.n_raters, alpha.n_items) == (2, 3)


def test_alpha_needs_two_raters_and_shared_items() -> None:
    one = stats.ordinal_alpha(np.array([[1, 2, 3]], dtype=float))
    assert one.value is None and "2 raters" in one.reason and one.n_raters == 1
    disjoint = stats.ordinal_alpha(np.array([[1, np.nan], [np.nan, 3]], dtype=float))
    assert disjoint.value is None and disjoint.n_items == 0 and "2 or more raters" in disjoint.reason
    same = stats.ordinal_alpha(np.array([[3, 3], [3, 3]], dtype=float))
    assert same.value is None and same.n_items == 2 and "same score" in same.reason
    # An item rated by one rater only does not count towards n_items.
    partial = stats.ordinal_alpha(np.array([[1, 2, 3, 5], [1, 3, 3, np.nan]], dtype=float))
    assert partial.n_items == 3 and partial.value == pytest.approx(7 / 9)


def test_reliability_matrix_refuses_double_ratings() -> None:
    points = [RatingPoint("r1", "m1", "c", "saliency", 3), RatingPoint("r1", "m1", "c", "saliency", 4)]
    with pytest.raises(ValueError, match="twice"):
        stats.reliability_matrix(points)


def test_summarise_per_method() -> None:
    points = [
        RatingPoint("r1", "m1", "c1", "saliency", 4, ("eyes",), False),
        RatingPoint("r2", "m1", "c1", "saliency", 5, ("eyes", "nose"), True),
        RatingPoint("r1", "m2", "c2", "saliency", 2, (), False),
        RatingPoint("r2", "m2", "c2", "saliency", 2, ("hair_background",), True),
        RatingPoint("r1", "m3", "c1", "gradcam", 1, (), False),
    ]
    summary = stats.summarise(points, methods=["gradcam", "saliency", "occlusion"],
                              regions=["eyes", "nose", "hair_background"])
    by = {m.method: m for m in summary.methods}
    assert [m.method for m in summary.methods] == ["gradcam", "saliency", "occlusion"]
    sal = by["saliency"]
    assert sal.n == 4 and sal.mean.mean == pytest.approx(3.25) and sal.mean.n_clusters == 2
    assert sal.distribution == {1: 0, 2: 2, 3: 0, 4: 1, 5: 1}
    assert sal.regions["eyes"] == {"count": 2, "share": 0.5}
    assert sal.context_share == 0.5
    assert sal.alpha.n_raters == 2 and sal.alpha.n_items == 2 and sal.alpha.value is not None
    assert by["gradcam"].alpha.value is None and by["gradcam"].mean.low is None
    assert by["occlusion"].n == 0 and by["occlusion"].mean.mean is None
    assert summary.alpha.n_items == 2 and summary.n_ratings == 5 and summary.n_raters == 2
    data = summary.to_dict()
    assert data["methods"][1]["distribution"] == {"1": 0, "2": 2, "3": 0, "4": 1, "5": 1}
    assert data["bootstrap"]["unit"] == "case"
    assert not math.isnan(data["methods"][1]["alpha"]["value"])
