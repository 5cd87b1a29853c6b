"""Objectives (logit | embedding similarity) and the exact similarity decomposition.

Each check could fail: the decomposition must add up to the dot product / cosine / logit computed the ordinary
way to 1e-4 relative, integrated gradients on a similarity must be complete, occlusion on a similarity must equal
a plain loop of full forward passes, and Grad-CAM on a similarity must equal a hand computation.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from app.explain.decomposition import decompose, direction_for, spread
from app.explain.engine import Explainer
from app.explain.objectives import Objective, cosine, parse_key
from app.explain.occlusion import occlusion_windows
from app.explain.registry import DEFAULT_PANEL
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess
from tests.explain.conftest import smooth_crop

SMALL = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 3},
         "occlusion": {"window": 16, "stride": 16}}


def embedding(network: IResNet, crop: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(preprocess(crop))[1][0].double().numpy()


def similarity_to(network: IResNet, crop: np.ndarray, reference: np.ndarray) -> float:
    e = embedding(network, crop)
    return float(e @ reference / (np.linalg.norm(e) * np.linalg.norm(reference)))


@pytest.fixture(scope="module")
def other_crop() -> np.ndarray:
    return smooth_crop(5)


@pytest.mark.parametrize("net_name", ["demo_network", "random_network"])
def test_decomposition_adds_up_to_the_dot_product_on_both_faces(
        net_name: str, request: pytest.FixtureRequest, crop: np.ndarray, other_crop: np.ndarray) -> None:
    network: IResNet = request.getfixturevalue(net_name)
    e_a, e_b = embedding(network, crop), embedding(network, other_crop)
    dot = float(e_a @ e_b)
    on_a = decompose(network, preprocess(crop), e_b)
    on_b = decompose(network, preprocess(other_crop), e_a)
    for side in (on_a, on_b):
        assert side.grid.shape == (7, 7)
        assert abs(side.grid.sum() + side.constant - dot) <= 1e-4 * abs(dot)
        assert np.abs(side.grid).max() > 1e-3 * abs(dot)  # not a constant in disguise
    assert not np.allclose(on_a.grid, on_b.grid)  # the two sides are two different maps


def test_decomposition_of_the_cosine_and_of_a_logit_is_exact(demo_network: IResNet, crop: np.ndarray,
                                                             other_crop: np.ndarray) -> None:
    x = preprocess(crop)
    reference = embedding(demo_network, other_crop)
    cosine_value = similarity_to(demo_network, crop, reference)
    objective = Objective.similarity(reference, name="similarity:case:other")
    direction, bias, value = direction_for(demo_network, x, objective)
    assert abs(value - cosine_value) < 1e-6
    split = decompose(demo_network, x, direction, bias=bias)
    assert abs(split.grid.sum() + split.constant - cosine_value) <= 1e-4 * abs(cosine_value)
    with torch.no_grad():
        logit = float(demo_network(x)[0][0, 3])
    direction, bias, _ = direction_for(demo_network, x, Objective.logit(3))
    split = decompose(demo_network, x, direction, bias=bias)
    assert abs(split.grid.sum() + split.constant - logit) <= 1e-4 * abs(logit)


def test_the_engines_decomposition_map_sums_to_the_objective_minus_the_constant(
        demo_explainer: Explainer, demo_network: IResNet, crop: np.ndarray, other_crop: np.ndarray) -> None:
    reference = embedding(demo_network, other_crop)
    objective = Objective.similarity(reference, name="similarity:gallery:img-1")
    values = demo_explainer.explain(crop, objective=objective, methods=["similarity_decomposition"])
    heat = values["similarity_decomposition"]
    x = preprocess(crop)
    direction, bias, value = direction_for(demo_network, x, objective)
    split = decompose(demo_network, x, direction, bias=bias)
    assert heat.shape == (112, 112) and heat.dtype == np.float32
    assert abs(float(heat.sum(dtype=np.float64)) + split.constant - value) <= 1e-4 * abs(value)
    np.testing.assert_allclose(heat, spread(split.grid), rtol=1e-6, atol=1e-9)


def test_decomposition_refuses_a_network_it_does_not_hold_for(demo_network: IResNet, crop: np.ndarray) -> None:
    training = copy.deepcopy(demo_network).train()
    with pytest.raises(ValueError, match="eval mode"):
        decompose(training, preprocess(crop), np.ones(512))
    with pytest.raises(ValueError, match="iResNet"):
        decompose(torch.nn.Linear(3, 3), preprocess(crop), np.ones(512))


def test_integrated_gradients_is_complete_on_a_similarity(demo_network: IResNet, crop: np.ndarray,
                                                          other_crop: np.ndarray) -> None:
    reference = embedding(demo_network, other_crop)
    objective = Objective.similarity(reference, name="similarity:case:other")
    black = np.zeros_like(crop)
    delta = similarity_to(demo_network, crop, reference) - similarity_to(demo_network, black, reference)
    ig = Explainer(demo_network).explain(crop, objective=objective, methods=["integrated_gradients"],
                                         params={"integrated_gradients": {"steps": 64}})
    assert abs(delta) > 0.05
    assert abs(float(ig["integrated_gradients"].sum(dtype=np.float64)) - delta) < 0.02 * abs(delta)


def test_occlusion_on_a_similarity_equals_a_slow_reference(random_network: IResNet, crop: np.ndarray,
                                                           other_crop: np.ndarray) -> None:
    reference = embedding(random_network, other_crop)
    objective = Objective.similarity(reference, name="similarity:centroid:syn_a")
    window, stride = 12, 10
    ours = Explainer(random_network).explain(crop, objective=objective, methods=["occlusion"],
                                             params={"occlusion": {"window": window, "stride": stride}})
    x = preprocess(crop)
    unit = torch.tensor(reference / np.linalg.norm(reference), dtype=torch.float32)
    total, count = np.zeros((112, 112)), np.zeros((112, 112))
    with torch.no_grad():
        clean = float(cosine(random_network(x)[1], unit))
        for y0, y1, x0, x1 in occlusion_windows(112, 112, window, stride):
            occluded = x.clone()
            occluded[:, :, y0:y1, x0:x1] = -1.0
            total[y0:y1, x0:x1] += clean - float(cosine(random_network(occluded)[1], unit))
            count[y0:y1, x0:x1] += 1
    slow = total / count
    assert np.abs(slow).max() > 1e-3
    np.testing.assert_allclose(ours["occlusion"], slow, atol=2e-5 * np.abs(slow).max() + 1e-6)


def test_gradcam_on_a_similarity_follows_the_embedding_network_rule(
        demo_network: IResNet, crop: np.ndarray, other_crop: np.ndarray) -> None:
    """Chen et al. (WACV 2020) for one pair: Σ_k mean(∂cos/∂A_k)·A_k at layer4, then bilinear to 112."""
    reference = embedding(demo_network, other_crop)
    objective = Objective.similarity(reference, name="similarity:case:other")
    ours = Explainer(demo_network).explain(crop, objective=objective, methods=["gradcam"])["gradcam"]
    network = copy.deepcopy(demo_network).eval()
    captured: list[torch.Tensor] = []
    handle = network.layer4.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = preprocess(crop).requires_grad_(True)
    e = network(x)[1]
    handle.remove()
    unit = torch.tensor(reference / np.linalg.norm(reference), dtype=torch.float32)
    (grad,) = torch.autograd.grad(cosine(e, unit).sum(), captured[0])
    cam = (grad.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(dim=1, keepdim=True)
    expected = torch.nn.functional.interpolate(cam, (112, 112), mode="bilinear")[0, 0].detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_every_method_explains_a_similarity_and_the_objective_changes_the_map(
        demo_explainer: Explainer, demo_network: IResNet, crop: np.ndarray, other_crop: np.ndarray) -> None:
    objective = Objective.similarity(embedding(demo_network, other_crop), name="similarity:case:other")
    methods = [*DEFAULT_PANEL, "similarity_decomposition"]
    similarity = demo_explainer.explain(crop, objective=objective, methods=methods, params=SMALL)
    logit = demo_explainer.explain(crop, target=2, methods=methods, params=SMALL)
    for method in methods:
        values = similarity[method]
        assert values.shape == (112, 112) and np.isfinite(values).all(), method
        assert np.abs(values).max() > 0, method
        assert not np.allclose(values, logit[method]), method


def test_target_and_objective_agree_for_a_logit(demo_explainer: Explainer, crop: np.ndarray) -> None:
    by_target = demo_explainer.explain(crop, target=4, methods=["saliency", "occlusion"], params=SMALL)
    by_objective = demo_explainer.explain(crop, objective=Objective.logit(4), methods=["saliency", "occlusion"],
                                          params=SMALL)
    for method in by_target:
        np.testing.assert_array_equal(by_target[method], by_objective[method])
    with pytest.raises(ValueError, match="exactly one"):
        demo_explainer.explain(crop, target=4, objective=Objective.logit(4), methods=["saliency"])
    with pytest.raises(ValueError, match="out of range"):
        demo_explainer.explain(crop, objective=Objective.logit(99), methods=["saliency"])


def test_objective_names_and_keys() -> None:
    objective = Objective.similarity(np.arange(1, 513, dtype=np.float32), name="similarity:case:abc123")
    assert objective.key == "similarity:case:abc123" and objective.kind == "similarity"
    assert abs(float(np.linalg.norm(objective.reference)) - 1.0) < 1e-6
    assert Objective.logit(3).key == "logit:3"
    assert parse_key("similarity:centroid:syn_a") == ("similarity", "centroid", "syn_a")
    assert parse_key("logit:7") == ("logit", "", "7")
    for bad in ("similarity:friend:x", "similarity:case:", "logit:-1", "logit:x", "similarity:case:a/b"):
        with pytest.raises(ValueError):
            parse_key(bad)
    with pytest.raises(ValueError, match="name"):
        Objective.similarity(np.ones(512), name="case:abc")
    with pytest.raises(ValueError, match="zeros"):
        Objective.similarity(np.zeros(512), name="similarity:case:abc")
    with pytest.raises(ValueError, match="non-finite"):
        Objective.similarity(np.full(512, np.nan), name="similarity:case:abc")


@pytest.mark.parametrize("net_name", ["demo_network", "odd_slope_network"])
def test_deeplift_on_a_similarity_sums_to_the_change_in_similarity(
        net_name: str, request: pytest.FixtureRequest, crop: np.ndarray, other_crop: np.ndarray) -> None:
    """Without the secant line for the final normalisation the demo map sums to 0.06 for a change of 0.92."""
    network: IResNet = request.getfixturevalue(net_name)
    reference = embedding(network, other_crop)
    objective = Objective.similarity(reference, name="similarity:case:other")
    delta = similarity_to(network, crop, reference) - similarity_to(network, np.zeros_like(crop), reference)
    values = Explainer(network).explain(crop, objective=objective, methods=["deeplift"])["deeplift"]
    assert abs(delta) > 0.01
    assert abs(float(values.sum(dtype=np.float64)) - delta) < 1e-3 * abs(delta) + 1e-5
