"""Fast mode's per-CPU plan (issue 25): each variant's agreement on the demo model, the plan measured once per
network and honoured from its file, the networks built once and reused, and coarse-to-fine occlusion's mechanics.

Agreement, never timings: that fast mode is never slower than exact is the bench's claim (bench/bench_explain.py),
not a timed test.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from app.explain import fast, fast_calibrate, fast_plan
from app.explain.coarse_to_fine import coarse_mask, coarse_to_fine
from app.explain.cohort_batch import CohortItem, explain_cohort
from app.explain.engine import Explainer
from app.explain.fast_plan import BFLOAT16, FLOAT32, FOLDED, Choice, FastPlan
from app.explain.folded import InferenceForward, inference_forward
from app.explain.occlusion import (
    _IncrementalOcclusion,
    linear_tail_estimates,
    map_from_differences,
    occlusion_map,
    occlusion_windows,
)
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


@pytest.fixture(autouse=True)
def own_plan_directory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Each test's plans in its own directory, memory forgotten before and after: the plans these tests install
    (some deliberately below the bar) never reach another test."""
    monkeypatch.setattr(fast_plan, "_DIRECTORY", tmp_path / "plans")
    fast_plan.clear_memory_cache()
    yield
    fast_plan.clear_memory_cache()


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    from app.synth.generate import generate_one
    from app.vision.pipeline import process_photo

    return process_photo(generate_one(0, "syn_a", 0).jpeg).aligned.crop


def make_plan(explainer: Explainer, **choices: tuple[str, float]) -> FastPlan:
    """A plan for ``explainer``'s network on this machine with the given (precision, work) per method."""
    defaults = {"integrated_gradients": (FOLDED, 50.0), "smoothgrad": (FOLDED, 25.0), "occlusion": (FOLDED, 1.0)}
    defaults.update(choices)
    key = fast_plan.plan_key(explainer.device, fast_plan.network_digest(explainer._network))
    return FastPlan(key=key, cpu=fast_plan.machine_name(explainer.device), created="test", calibration_seconds=0.0,
                    choices={m: Choice(m, p, w, 1.0, 1.0, 1.0, "set by the test") for m, (p, w) in defaults.items()})


def install(plan: FastPlan) -> None:
    """Write ``plan`` as the plan file of its key and forget the plans in memory (so the file is what is read)."""
    path = fast_plan._path(plan.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.to_json()))
    fast_plan.clear_memory_cache()


# every variant fast mode may choose, on the demo model: (method, precision, work)
VARIANTS = [
    ("integrated_gradients", FOLDED, 10.0),
    ("integrated_gradients", BFLOAT16, 16.0),
    ("integrated_gradients", FLOAT32, 12.0),
    ("smoothgrad", FOLDED, 25.0),
    ("smoothgrad", BFLOAT16, 25.0),
    ("occlusion", FOLDED, 0.0),
    ("occlusion", FOLDED, 0.2),
    ("occlusion", BFLOAT16, 1.0),
    ("occlusion", BFLOAT16, 0.2),
]


@pytest.mark.parametrize(("method", "precision", "work"), VARIANTS)
def test_every_fast_variant_agrees_with_exact_on_the_demo_model(demo_network: IResNet, face_crop: np.ndarray,
                                                                method: str, precision: str, work: float) -> None:
    explainer = Explainer(demo_network)
    install(make_plan(explainer, **{method: (precision, work)}))
    target = int(demo_network(preprocess(face_crop))[0].argmax())
    exact = explainer.explain(face_crop, target=target, methods=[method])[method]
    quick = explainer.explain(face_crop, target=target, methods=[method], mode="fast")[method]
    assert explainer.fast_plan().choice(method).precision == precision  # the installed plan was honoured
    assert corr(quick, exact) >= fast.MIN_FAST_CORR, f"{method} {precision} {work}: corr {corr(quick, exact):.5f}"
    assert not np.array_equal(quick, exact)


def test_the_plan_is_measured_once_per_network_and_honoured_from_its_file(
        demo_network: IResNet, crop: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    measured: list[str] = []
    real = fast_calibrate.calibrate

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        measured.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(fast_calibrate, "calibrate", counting)
    try:
        first = Explainer(demo_network)
        params = {"integrated_gradients": {"steps": 50}}
        maps = first.explain(crop, target=1, methods=list(fast.FAST_VARIANTS), params=params, mode="fast")
        first.explain(crop, target=2, methods=["integrated_gradients"], mode="fast")
        explain_cohort(first, [CohortItem(crop, 0), CohortItem(crop, 1)], methods=["smoothgrad"], mode="fast")
        assert len(measured) == 1
        files = list((tmp_path / "plans").glob("*.json"))
        assert len(files) == 1
        stored = json.loads(files[0].read_text())
        assert stored["key"] == measured[0] and set(stored["choices"]) == set(fast.FAST_VARIANTS)
        for choice in stored["choices"].values():  # each choice says what it is and why, with its agreement
            assert choice["why"] and choice["agreement"] >= fast_plan.CALIBRATION_BAR
            assert choice["seconds"] <= choice["exact_seconds"] * 1.0001 or choice["work"] in (50, 25, 1.0)

        # a new process (memory forgotten), a new explainer of the same network: the file is read, not re-measured
        fast_plan.clear_memory_cache()
        second = Explainer(demo_network)
        assert second.fast_plan().choices == first.fast_plan().choices
        again = second.explain(crop, target=1, methods=list(fast.FAST_VARIANTS), params=params, mode="fast")
        assert len(measured) == 1
        for method_id in fast.FAST_VARIANTS:
            np.testing.assert_allclose(again[method_id], maps[method_id], rtol=0,
                                       atol=1e-5 * float(np.abs(maps[method_id]).max()))

        # the stored choice is honoured: edit the file, and fast IG runs the steps it names
        stored["choices"]["integrated_gradients"].update(precision=FOLDED, work=4.0)
        files[0].write_text(json.dumps(stored))
        fast_plan.clear_memory_cache()
        third = Explainer(demo_network)
        four = third.explain(crop, target=1, methods=["integrated_gradients"], mode="fast")["integrated_gradients"]
        by_hand = _ig_by_hand(inference_forward(third._network), preprocess(crop), target=1, steps=4)
        np.testing.assert_allclose(four, by_hand, rtol=0, atol=1e-5 * float(np.abs(by_hand).max()))
        assert len(measured) == 1

        # a corrupt file is measured again and replaced
        files[0].write_text("{ not json")
        fast_plan.clear_memory_cache()
        Explainer(demo_network).fast_plan()
        assert len(measured) == 2 and json.loads(files[0].read_text())["key"] == measured[0]
    finally:
        fast_plan.clear_memory_cache()


def _ig_by_hand(forward: InferenceForward, x: torch.Tensor, *, target: int, steps: int) -> np.ndarray:
    from captum.attr._utils.approximation_methods import approximation_parameters

    sizes, alphas = (f(steps) for f in approximation_parameters("gausslegendre"))
    base = torch.full_like(x, -1.0)
    total = torch.zeros_like(x)
    with torch.inference_mode(False), torch.enable_grad():
        for size, alpha in zip(sizes, alphas, strict=True):
            scaled = (base + alpha * (x - base)).requires_grad_(True)
            (grad,) = torch.autograd.grad(forward.differentiable(scaled)[0, target], scaled)
            total += size * grad
    return (total * (x - base)).sum(dim=1)[0].detach().numpy()


def test_fast_networks_are_built_once_per_network_and_reused(demo_network: IResNet, crop: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause of fast mode costing 7x exact in a cohort was a variant that is slow on the CPU (bf16 emulated),
    not a rebuild; this holds the other half: the folded copy and the bf16 twin are built once per explainer."""
    explainer = Explainer(demo_network)
    install(make_plan(explainer, integrated_gradients=(BFLOAT16, 4.0), smoothgrad=(FOLDED, 4.0),
                      occlusion=(BFLOAT16, 0.0)))
    conversions: list[int] = []
    folds: list[int] = []
    real_convert, real_init = fast._convert, InferenceForward.__init__
    monkeypatch.setattr(fast, "_convert", lambda forward: conversions.append(1) or real_convert(forward))

    def counting_init(self: InferenceForward, network: IResNet) -> None:
        folds.append(1)
        real_init(self, network)

    monkeypatch.setattr(InferenceForward, "__init__", counting_init)
    params = {"occlusion": {"stride": 10}}
    for target in (0, 1):
        explainer.explain(crop, target=target, methods=list(fast.FAST_VARIANTS), params=params, mode="fast")
    explain_cohort(explainer, [CohortItem(crop, 0), CohortItem(crop, 2)], methods=list(fast.FAST_VARIANTS),
                   params=params, mode="fast")
    assert len(conversions) == 1 and len(folds) == 1
    plan = explainer.fast_plan()
    assert plan is explainer.fast_plan()


def test_plan_work_scales_with_the_request() -> None:
    choices = {"integrated_gradients": Choice("integrated_gradients", FOLDED, 12.0, 1, 2, 0.999, ""),
               "smoothgrad": Choice("smoothgrad", FOLDED, 20.0, 1, 2, 0.999, ""),
               "occlusion": Choice("occlusion", FOLDED, 0.2, 1, 2, 0.999, "")}
    plan = FastPlan(key="k", cpu="c", created="t", calibration_seconds=0.0, choices=choices)
    assert plan.ig_steps(50) == 12 and plan.ig_steps(8) == 8 and plan.ig_steps(200) == 48
    assert plan.ig_steps(50, "riemann_trapezoid") == 50  # the ladder was measured on Gauss-Legendre only
    assert plan.sg_samples(25) == 20 and plan.sg_samples(5) == 5 and plan.sg_samples(50) == 40
    assert plan.occlusion_refine(10, 5) == 0.2 and plan.occlusion_refine(10, 10) is None
    assert FastPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    broken = plan.to_json()
    broken["choices"]["occlusion"]["precision"] = "float8"
    with pytest.raises(ValueError, match="known precision"):
        FastPlan.from_json(broken)
    exact_plan = dataclasses.replace(plan, choices={**choices, "occlusion": dataclasses.replace(
        choices["occlusion"], work=1.0)})
    assert exact_plan.occlusion_refine(10, 5) is None


def test_coarse_to_fine_evaluates_what_it_promises(demo_network: IResNet, crop: np.ndarray) -> None:
    forward = inference_forward(demo_network)
    x = preprocess(crop)
    windows = occlusion_windows(112, 112, 10, 5)
    exact = occlusion_map(forward, x, target=1)
    np.testing.assert_array_equal(occlusion_map(forward, x, target=1, refine=1.0), exact)

    engine = _IncrementalOcclusion(forward, x, windows, -1.0)
    reference = float(engine.clean_logits[0, 1])
    with torch.inference_mode():
        diffs = (reference - engine.logits(slice(0, len(windows)))[:, 1]).numpy().astype(np.float64)
    evaluated: list[np.ndarray] = []

    def lookup(indices: np.ndarray, report) -> np.ndarray:  # type: ignore[no-untyped-def]
        evaluated.append(indices)
        report(len(indices))
        return diffs[indices]

    progress: list[float] = []
    values = coarse_to_fine((22, 22), lookup, refine=0.25, on_progress=progress.append)
    seen = np.concatenate(evaluated)
    coarse = np.flatnonzero(coarse_mask((22, 22)).ravel())
    assert len(np.unique(seen)) == len(seen) == len(coarse) + int(np.ceil(0.25 * (484 - len(coarse))))
    assert set(coarse) <= set(seen)
    np.testing.assert_allclose(values[seen], diffs[seen], rtol=0, atol=1e-6)  # evaluated windows are exact
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    # a perfect control variate makes the interpolated windows exact too
    perfect = coarse_to_fine((22, 22), lambda i, r: diffs[i], refine=0.0, base=diffs)
    np.testing.assert_allclose(perfect, diffs, rtol=0, atol=1e-6)
    # the linearised tail is a real estimate of the differences (what makes it a useful control variate)
    estimates = linear_tail_estimates(engine, 1)
    assert corr(estimates, diffs) > 0.5
    approximate = occlusion_map(forward, x, target=1, refine=0.25)
    assert corr(approximate, exact) >= fast.MIN_FAST_CORR and not np.array_equal(approximate, exact)
    # ... and better than interpolating the differences alone from the same number of windows
    assert corr(approximate, exact) > corr(map_from_differences(windows, values, 112, 112), exact)
    with pytest.raises(ValueError, match="refine"):
        occlusion_map(forward, x, target=1, refine=1.5)
