"""Known-answer tests of the evaluation metrics: cases where the right score is known in advance.

A map equal to the mask must localise perfectly (1) and its complement not at all (0); a random map must
score the mask's area share in expectation; a model that ignores its input must give flat curves; linear
imputation must reproduce a linear image exactly; the ROAD solver must agree with a slow pixel-by-pixel
reference; the deletion curve with a slow loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluate import context, faithfulness, localisation
from app.evaluate.completeness import completeness, steps_for_tolerance


def _mask(y0: int = 40, y1: int = 60, x0: int = 30, x1: int = 70) -> np.ndarray:
    mask = np.zeros((112, 112), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_map_equal_to_the_mask_scores_one_and_its_complement_zero() -> None:
    mask = _mask()
    perfect = localisation.score_map(mask.astype(np.float32), mask, tolerance=0)
    assert (perfect.pointing, perfect.mass, perfect.rank) == (1.0, 1.0, 1.0)
    worst = localisation.score_map((~mask).astype(np.float32), mask, tolerance=0)
    assert (worst.pointing, worst.mass, worst.rank) == (0.0, 0.0, 0.0)
    assert perfect.area_share == pytest.approx(20 * 40 / 112**2)


def test_negative_relevance_does_not_count_as_localisation() -> None:
    mask = _mask()
    signed = np.where(mask, -1.0, 0.1)  # strong evidence *against* inside the mask
    assert localisation.relevance_mass_accuracy(signed, mask) == 0.0


def test_pointing_tolerance_is_in_pixels() -> None:
    mask = _mask()
    attribution = np.zeros((112, 112))
    attribution[50, 75] = 1.0  # 5 px right of the mask's last column (69)
    assert localisation.pointing_game(attribution, mask, tolerance=4) == 0.0
    assert localisation.pointing_game(attribution, mask, tolerance=6) == 1.0
    assert localisation.pointing_game(np.zeros((112, 112)), mask) == 0.0  # a flat map points nowhere


def test_random_maps_score_the_area_share_in_expectation() -> None:
    mask = _mask()
    rng = np.random.default_rng(0)
    scores = [localisation.score_map(rng.random((112, 112)), mask, tolerance=0) for _ in range(400)]
    share = localisation.area_share(mask)
    for key in ("mass", "rank", "pointing"):
        values = np.array([getattr(s, key) for s in scores])
        stderr = values.std(ddof=1) / np.sqrt(values.size)
        assert abs(values.mean() - share) < 4 * stderr + 1e-3, key


def test_rank_accuracy_shares_ties_fractionally() -> None:
    mask = _mask()
    assert localisation.relevance_rank_accuracy(np.ones((112, 112)), mask) == pytest.approx(
        localisation.area_share(mask))


def test_centre_prior_beats_the_area_share_on_a_central_mask() -> None:
    mask = _mask(46, 66, 46, 66)
    scores = localisation.score_map(localisation.centre_prior(), mask, tolerance=0)
    assert scores.mass > 2 * scores.area_share
    assert scores.pointing == 1.0


def test_bootstrap_interval_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(1).normal(0.5, 0.1, 50)
    a, b = localisation.bootstrap_ci(values, seed=3), localisation.bootstrap_ci(values, seed=3)
    assert a == b
    assert a.low < a.mean < a.high
    assert a.high - a.low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(50), rel=0.25)
    assert localisation.bootstrap_ci([0.7]).low == 0.7


def _constant_model(batch: np.ndarray) -> np.ndarray:
    return np.full(len(batch), 3.5)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (3, 112, 112)).astype(np.float32)


def test_a_model_that_ignores_its_input_gives_flat_curves() -> None:
    attribution = np.random.default_rng(2).normal(size=(112, 112))
    result = faithfulness.evaluate_faithfulness(_constant_model, _image(), attribution,
                                                road_percentages=(0.2, 0.6))
    for name in ("deletion_morf", "deletion_lerf", "insertion_morf", "insertion_lerf", "road_morf", "road_lerf"):
        curve = getattr(result, name)
        assert set(curve.scores) == {3.5}, name
        assert curve.auc == pytest.approx(3.5)
    assert result.deletion_gap == 0.0 and result.insertion_gap == 0.0 and result.road_gap == 0.0


def _mask_model(mask: np.ndarray):
    """A model whose score is the mean of channel 0 inside ``mask``: only the masked pixels matter."""
    def score(batch: np.ndarray) -> np.ndarray:
        return batch[:, 0][:, mask].mean(axis=1)
    return score


def test_removing_the_truly_relevant_pixels_first_changes_the_score_fastest() -> None:
    mask = _mask()
    stripes = np.where(np.arange(112) % 2 == 0, 1.0, -1.0)[None, :].repeat(112, axis=0)
    image = np.stack([stripes] * 3).astype(np.float32)

    def stripe_detector(batch: np.ndarray) -> np.ndarray:  # reads only the stripes inside the mask
        return (batch[:, 0] * stripes)[:, mask].mean(axis=1)

    result = faithfulness.evaluate_faithfulness(stripe_detector, image, mask.astype(float), road_percentages=None)
    assert result.deletion_morf.scores[0] == pytest.approx(1.0)
    assert result.deletion_morf.scores[-1] == pytest.approx(0.0)  # everything black: no stripes left
    assert result.deletion_gap > 0.5
    assert result.insertion_morf.scores[0] == pytest.approx(result.insertion_lerf.scores[0])  # the blurred image
    assert abs(result.insertion_morf.scores[0]) < 0.05  # blurring removes the stripes
    assert result.insertion_gap > 0.5
    # insertion starts from a blur, not black: it is not deletion read backwards
    assert result.insertion_gap != pytest.approx(result.deletion_gap)


def test_deletion_curve_equals_a_slow_loop() -> None:
    rng = np.random.default_rng(4)
    image, attribution = _image(4), rng.normal(size=(112, 112))
    weights = rng.normal(size=(3, 112, 112))

    def linear(batch: np.ndarray) -> np.ndarray:
        return (batch * weights).sum(axis=(1, 2, 3))

    fractions = (0.0, 0.25, 0.5, 1.0)
    fast = faithfulness.deletion_curve(linear, image, attribution, fractions, order="signed")
    order = sorted(range(112 * 112), key=lambda i: (-attribution.ravel()[i], i))
    for f, value in zip(fractions, fast.scores, strict=True):
        slow = image.copy()
        for i in order[:round(f * 112 * 112)]:
            slow[:, i // 112, i % 112] = -1.0
        assert value == pytest.approx(float(linear(slow[None])[0]), rel=1e-9, abs=1e-6)


def test_linear_imputation_reproduces_a_linear_image() -> None:
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float64)
    plane = (0.02 * xs - 0.01 * ys + 0.1)[None].repeat(3, axis=0)
    removed = np.zeros((32, 32), dtype=bool)
    removed[5:27, 8:20] = True  # interior hole: the linear plane solves the neighbour-mean equations
    out = faithfulness.noisy_linear_impute(plane, removed, noise=0.0)
    assert np.abs(out - plane).max() < 1e-5


def test_imputation_matches_a_slow_gauss_seidel_reference() -> None:
    rng = np.random.default_rng(5)
    image = rng.uniform(-1, 1, (1, 12, 12))
    removed = rng.random((12, 12)) < 0.5
    fast = faithfulness.noisy_linear_impute(image, removed, noise=0.0)
    slow = image.copy()
    slow[0][removed] = 0.0
    neighbours = [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
                  (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]
    for _ in range(3000):
        for y, x in zip(*np.nonzero(removed), strict=True):
            total = weight = 0.0
            for dy, dx, w in neighbours:
                if 0 <= y + dy < 12 and 0 <= x + dx < 12:
                    total += w * slow[0, y + dy, x + dx]
                    weight += w
            slow[0, y, x] = total / weight
    assert np.abs(fast - slow).max() < 1e-4
    assert np.array_equal(fast[0][~removed], image[0][~removed].astype(np.float32))


def test_context_shares_partition_the_crop() -> None:
    areas = context.area_masks()
    stacked = np.stack(list(areas.values())).sum(axis=0)
    assert (stacked == 1).all()
    flat = context.context_shares(np.ones((112, 112)))
    assert sum(flat.areas.values()) == pytest.approx(1.0)
    assert flat.areas == pytest.approx(flat.area_fraction)
    face_only = context.context_shares(areas["face"].astype(float))
    assert face_only.areas["face"] == pytest.approx(1.0) and face_only.context == pytest.approx(0.0)
    neck_only = context.context_shares(-areas["neck"].astype(float))  # sign does not matter: |map|
    assert neck_only.areas["neck"] == pytest.approx(1.0)
    assert context.context_shares(np.zeros((112, 112))).context == 1.0  # no attribution: 0 in the face


def test_context_occlusion_detects_a_model_that_reads_the_background() -> None:
    background = context.area_masks()["background"]

    def corner_model(batch: np.ndarray) -> np.ndarray:
        cue = batch[:, 0][:, background].mean(axis=1)
        return np.stack([np.zeros_like(cue), 10 * cue], axis=1)

    image = np.full((3, 112, 112), -0.5, dtype=np.float32)
    image[0][background] = 1.0
    result = context.context_occlusion(corner_model, image, target=1)
    assert result.rank == 1 and result.rank_face_only == 2
    assert result.logit_change < -5


def test_completeness_and_step_rule() -> None:
    assert completeness(np.full((2, 2), 0.25), 1.0).relative_error == pytest.approx(0.0)
    assert completeness(np.full((2, 2), 0.3), 1.0).relative_error == pytest.approx(0.2)
    rule = steps_for_tolerance(lambda steps: 1.0 / steps, 0.004, start=50, maximum=1000)
    assert rule.steps == 400 and [s for s, _ in rule.tried] == [50, 100, 200, 400]
    assert steps_for_tolerance(lambda steps: 1.0, 0.01, start=50, maximum=120).steps is None


def test_a_signed_map_whose_negative_half_goes_first_gains_no_gap_under_magnitude_order() -> None:
    """The issue's known answer: removing negative evidence first inflates a signed-order gap, not |map|'s."""
    rng = np.random.default_rng(8)
    image = _image(8)
    weights = rng.normal(size=(3, 112, 112))

    def linear(batch: np.ndarray) -> np.ndarray:
        return (batch * weights).sum(axis=(1, 2, 3))

    # a map whose sign follows each pixel's contribution but whose magnitude says nothing (flat |map|)
    contribution = ((image - faithfulness.BASELINE) * weights).sum(axis=0)
    signed = np.sign(contribution)
    by_sign = faithfulness.evaluate_faithfulness(linear, image, signed, road_percentages=None, order="signed")
    by_magnitude = faithfulness.evaluate_faithfulness(linear, image, signed, road_percentages=None)
    assert by_sign.deletion_gap > 10  # LeRF removed the negative half first: the score rose, the gap is large
    assert by_magnitude.deletion_gap == pytest.approx(0.0, abs=1e-9)  # flat |map|: the order carries nothing
    assert by_magnitude.order == "magnitude" and by_sign.order == "signed"
    # an unsigned map is ordered the same either way
    unsigned = np.abs(rng.normal(size=(112, 112)))
    a = faithfulness.evaluate_faithfulness(linear, image, unsigned, road_percentages=None)
    b = faithfulness.evaluate_faithfulness(linear, image, unsigned, road_percentages=None, order="signed")
    assert a.deletion_gap == b.deletion_gap


def test_faithfulness_correlation_of_a_linear_model() -> None:
    rng = np.random.default_rng(9)
    image = _image(9)
    weights = rng.normal(size=(3, 112, 112))

    def linear(batch: np.ndarray) -> np.ndarray:
        return (batch * weights).sum(axis=(1, 2, 3))

    subsets = faithfulness.random_subsets(image.shape, runs=60, seed=1)
    drops = faithfulness.subset_drops(linear, image, subsets)
    # a map equal to each value's contribution (summed over channels) explains the drops well; noise does not
    exact = ((image - faithfulness.BASELINE) * weights).sum(axis=0)
    assert faithfulness.faithfulness_correlation(exact, subsets, drops) > 0.5
    assert abs(faithfulness.faithfulness_correlation(rng.normal(size=(112, 112)), subsets, drops)) < 0.35
    assert faithfulness.faithfulness_correlation(np.ones((112, 112)), subsets, drops) == 0.0


def test_top_k_auc_and_the_fitted_centre_prior() -> None:
    mask = _mask()
    assert localisation.top_k_intersection(mask.astype(float), mask, k=100) == 1.0
    assert localisation.top_k_intersection((~mask).astype(float), mask, k=100) == 0.0
    assert localisation.roc_auc(mask.astype(float), mask) == 1.0
    assert localisation.roc_auc(np.zeros((112, 112)), mask) == 0.5  # all tied: chance
    rng = np.random.default_rng(1)
    assert localisation.roc_auc(rng.normal(size=(112, 112)), mask) == pytest.approx(0.5, abs=0.03)
    # a mask on the centre wants the narrowest prior; masks 25 px off centre (eyes, say) a wider one
    central = [_mask(50, 62, 50, 62)] * 3
    eyes = [_mask(26, 36, 20, 92)] * 3
    sigma_central, masses = localisation.fit_centre_prior(central)
    sigma_eyes, _ = localisation.fit_centre_prior(eyes)
    assert sigma_central == min(localisation.PRIOR_SIGMAS) and masses[sigma_central] == max(masses.values())
    assert sigma_eyes > sigma_central


def test_centre_prior_is_fitted_on_one_half_and_scored_on_the_other() -> None:
    """Faces alternate between the halves within each class. Here the first half's masks sit on the centre (it
    fits the narrowest prior) and the second half's 25 px off it (a wider one); every face is scored with the
    *other* half's σ, so the cross-fitted control is weaker than the prior fitted on the very faces it scores."""
    from app.evaluate.benchmark import BenchmarkFace
    from app.evaluate.scorecard import centre_prior_control, halves

    crop = np.zeros((112, 112, 3), dtype=np.uint8)
    central, off = _mask(50, 62, 50, 62), _mask(26, 36, 20, 92)
    faces = [BenchmarkFace(image_id=f"{label}{i}", label=label, crop=crop, mask=central if i % 2 == 0 else off,
                           severity=1.0) for label in ("a", "b") for i in range(4)]
    first, second = halves(faces)
    assert first == [0, 2, 4, 6] and second == [1, 3, 5, 7]
    control = centre_prior_control(faces, tolerance=0, seed=0)
    fit = control["fit"]
    assert fit["first"]["sigma_px"] == min(localisation.PRIOR_SIGMAS) < fit["second"]["sigma_px"]
    assert fit["first"]["fitted_on"] == fit["second"]["fitted_on"] == 4
    in_sample = np.mean([localisation.relevance_mass_accuracy(localisation.centre_prior(
        112, sigma_px=localisation.fit_centre_prior([f.mask])[0]), f.mask) for f in faces])
    assert control["mass"]["n"] == 8 and control["mass"]["mean"] < in_sample


def test_complexity_and_sparseness_of_known_maps() -> None:
    from app.evaluate import complexity

    flat = np.ones((112, 112))
    spike = np.zeros((112, 112))
    spike[5, 5] = 3.0
    assert complexity.sparseness(flat) == pytest.approx(0.0, abs=1e-9)
    assert complexity.sparseness(spike) > 0.99
    assert complexity.complexity(flat) == pytest.approx(np.log(112 * 112))
    assert complexity.complexity(spike) == pytest.approx(0.0)
    assert complexity.sparseness(-2 * flat) == complexity.sparseness(flat)  # magnitudes, scale-free


def test_robustness_of_a_map_that_ignores_noise_and_one_that_is_noise() -> None:
    from app.evaluate import robustness

    rng = np.random.default_rng(2)
    image = _image(2)
    copies = robustness.noisy_copies(image, 3, seed=0)
    assert np.abs(copies - image).max() <= robustness.NOISE + 1e-6
    steady = rng.normal(size=(112, 112))
    assert robustness.sensitivity(steady, [steady] * 3)["max_sensitivity"] == 0.0
    noise = robustness.sensitivity(steady, [rng.normal(size=(112, 112)) for _ in range(3)], image, list(copies))
    assert noise["max_sensitivity"] >= noise["avg_sensitivity"] > 1.0 and noise["lipschitz"] > 0
    ref = robustness.between_faces_sensitivity([steady, 2 * steady], [image, image + 1])
    assert ref["sensitivity"] == pytest.approx([1.0, 0.5])
