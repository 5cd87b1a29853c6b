"""Fast mode and cohort batching (issue 15): agreement with the exact maps, never timings.

* Fast-mode maps of the methods offered there stay within their stated agreement (Pearson correlation with the
  exact map, :data:`app.explain.fast.FastVariant.min_corr`) on the demo model, for a synthetic face through the
  real detection/alignment pipeline and for an image-like crop; methods not offered come back exact.
* A cohort batch (several faces' rows in one batch, batches straddling faces, a different target per face)
  gives the same maps as one face at a time in exact mode, for every method of the default panel (occlusion
  included: windows of several faces share the batches of the network's tail).
* Krypton-style capped occlusion with a cap of 1 is the exact computation (the capping code path itself).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.explain import fast
from app.explain.cohort_batch import BATCHED_METHODS, CohortItem, explain_cohort
from app.explain.engine import Explainer
from app.explain.occlusion import inference_forward, occlusion_map
from app.explain.registry import DEFAULT_PANEL
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess
from tests.explain.conftest import smooth_crop

# small but real parameters: every method's code path, a fraction of the default cost
SMALL = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 6}, "occlusion": {"stride": 10}}


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    from app.synth.generate import generate_one
    from app.vision.pipeline import process_photo

    return process_photo(generate_one(0, "syn_a", 0).jpeg).aligned.crop


def top_class(network: IResNet, crop: np.ndarray) -> int:
    return int(network(preprocess(crop))[0].argmax())


def test_modes_are_checked_and_recorded_per_method() -> None:
    assert fast.check_mode("exact") == "exact" and fast.check_mode("fast") == "fast"
    for bad in ("Fast", "turbo", "", None, 1):
        with pytest.raises(ValueError, match="mode must be one of"):
            fast.check_mode(bad)
    modes = fast.modes_for(list(DEFAULT_PANEL), "fast")
    assert {m for m, mode in modes.items() if mode == "fast"} == set(fast.FAST_VARIANTS)
    assert set(fast.modes_for(list(DEFAULT_PANEL), "exact").values()) == {"exact"}
    # every variant offered meets the bar the issue sets
    assert all(v.min_corr >= fast.MIN_FAST_CORR for v in fast.FAST_VARIANTS.values())


def test_engine_refuses_an_unknown_mode(demo_explainer: Explainer, crop: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        demo_explainer.explain(crop, target=0, methods=["saliency"], mode="turbo")


@pytest.mark.parametrize("which", ["face", "smooth"])
def test_fast_maps_stay_within_their_stated_agreement(demo_network: IResNet, demo_explainer: Explainer,
                                                       face_crop: np.ndarray, which: str) -> None:
    image = face_crop if which == "face" else smooth_crop(3)
    target = top_class(demo_network, image)
    methods = [*fast.FAST_VARIANTS, "saliency", "gradcam"]  # default parameters: what fast mode is offered with
    exact = demo_explainer.explain(image, target=target, methods=methods)
    quick = demo_explainer.explain(image, target=target, methods=methods, mode="fast")
    for method_id, variant in fast.FAST_VARIANTS.items():
        agreement = corr(quick[method_id], exact[method_id])
        assert agreement >= variant.min_corr, f"{method_id}: corr {agreement:.5f} < {variant.min_corr}"
        assert not np.array_equal(quick[method_id], exact[method_id]), f"{method_id}: fast mode changed nothing"
    for method_id in ("saliency", "gradcam"):  # not offered in fast mode: computed exactly
        np.testing.assert_array_equal(quick[method_id], exact[method_id])


def test_an_exact_map_stays_exact_under_a_callers_autocast(demo_explainer: Explainer, crop: np.ndarray) -> None:
    import torch

    plain = demo_explainer.explain(crop, target=1, methods=["integrated_gradients"], params=SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = demo_explainer.explain(crop, target=1, methods=["integrated_gradients"], params=SMALL)
    np.testing.assert_array_equal(plain["integrated_gradients"], inside["integrated_gradients"])


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_cohort_batch_equals_one_at_a_time(demo_explainer: Explainer, face_crop: np.ndarray, mode: str) -> None:
    items = [CohortItem(face_crop, 0), CohortItem(smooth_crop(1), 1), CohortItem(smooth_crop(2), 2)]
    methods = list(DEFAULT_PANEL) if mode == "exact" else list(BATCHED_METHODS)
    one = [demo_explainer.explain(i.crop, target=i.target, methods=methods, params=SMALL, mode=mode)
           for i in items]
    seen: list[int] = []
    progress: list[float] = []
    # batch 5: the 3 x 8 IG rows and 3 x 6 SmoothGrad rows straddle faces in every batch; window batch 50: the
    # 3 x 121 occlusion windows share tail batches across faces (face 0's last 21 windows with face 1's first 29)
    batched = explain_cohort(demo_explainer, items, methods=methods, params=SMALL, mode=mode, batch_size=5,
                             window_batch=50, on_face=lambda i, maps: seen.append(i), on_progress=progress.append)
    assert seen == [0, 1, 2]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0) and len(progress) > 10
    assert len(batched) == len(items)
    # bf16 rounding depends on batch composition, so fast mode is held to agreement, exact mode to rounding
    for a, b in zip(one, batched, strict=True):
        assert list(b) == methods
        for method_id in methods:
            scale = float(np.abs(a[method_id]).max())
            if mode == "exact":
                np.testing.assert_allclose(b[method_id], a[method_id], rtol=0, atol=1e-5 * scale + 1e-12,
                                           err_msg=method_id)
            else:
                assert corr(b[method_id], a[method_id]) >= 0.999, method_id
    # the per-face targets were honoured: the three faces' maps differ
    assert not np.allclose(batched[0]["saliency"], batched[1]["saliency"])


def test_cohort_batch_checks_its_input(demo_explainer: Explainer, crop: np.ndarray) -> None:
    assert explain_cohort(demo_explainer, [], methods=["saliency"]) == []
    with pytest.raises(ValueError, match="out of range"):
        explain_cohort(demo_explainer, [CohortItem(crop, 99)], methods=["saliency"])
    with pytest.raises(ValueError, match="unknown method"):
        explain_cohort(demo_explainer, [CohortItem(crop, 0)], methods=["nope"])
    with pytest.raises(ValueError, match="mode must be one of"):
        explain_cohort(demo_explainer, [CohortItem(crop, 0)], methods=["saliency"], mode="turbo")
    # the same request checks as one face's (app.explain.engine.check_request): params must be a mapping
    with pytest.raises(ValueError, match="params must map"):
        explain_cohort(demo_explainer, [CohortItem(crop, 0)], methods=["saliency"], params=["saliency"])
    with pytest.raises(ValueError, match="single string"):
        explain_cohort(demo_explainer, [CohortItem(crop, 0)], methods="saliency")


def test_capped_occlusion_at_full_width_is_exact(demo_network: IResNet, crop: np.ndarray) -> None:
    forward = inference_forward(demo_network)
    x = preprocess(crop)
    exact = occlusion_map(forward, x, target=1, stride=10)
    capped = occlusion_map(forward, x, target=1, stride=10, projective_cap=1.0)
    np.testing.assert_allclose(capped, exact, rtol=0, atol=1e-5 * float(np.abs(exact).max()))
    approximate = occlusion_map(forward, x, target=1, stride=10, projective_cap=0.5)
    assert not np.allclose(approximate, exact)  # the cap really drops activations: an approximation
    with pytest.raises(ValueError, match="projective_cap"):
        occlusion_map(forward, x, target=1, projective_cap=0.0)
    with pytest.raises(ValueError, match="projective_cap"):
        occlusion_map(forward, x, target=1, projective_cap=0.5, incremental=False)
