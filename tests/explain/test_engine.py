"""The engine: isolation from the shared network, validation, sharing of passes, streaming, threads."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from app.explain.engine import Explainer
from app.explain.registry import DEFAULT_PANEL
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess
from tests.explain.conftest import smooth_crop
from tests.explain.test_rules import hooks_and_leftovers

FAST = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4}, "occlusion": {"window": 14, "stride": 14}}
GRADIENT_METHODS = [m for m in DEFAULT_PANEL if m != "occlusion"]


def _state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in network.state_dict().items()}


@pytest.fixture
def shared_network(demo_network: IResNet) -> Iterator[IResNet]:
    """A fresh stand-in for the registry's shared model (eval mode, parameters requiring grad as trained)."""
    network = copy.deepcopy(demo_network).eval()
    yield network


def test_maps_are_float32_112_finite_and_nonzero(demo_explainer: Explainer, crop: np.ndarray) -> None:
    maps = demo_explainer.explain(crop, target=3, methods=GRADIENT_METHODS, params=FAST)
    assert list(maps) == GRADIENT_METHODS
    for method_id, result in maps.items():
        assert result.dtype == np.float32, method_id
        assert result.shape == (112, 112), method_id
        assert np.isfinite(result).all(), method_id
        assert np.abs(result).max() > 0, method_id
        assert result.flags.c_contiguous
    assert (maps["saliency"] >= 0).all() and (maps["smoothgrad"] >= 0).all()
    assert (maps["input_x_gradient"] < 0).any() and (maps["input_x_gradient"] > 0).any()


def test_occlusion_through_the_engine(demo_explainer: Explainer, crop: np.ndarray) -> None:
    maps = demo_explainer.explain(crop, target=3, methods=["occlusion"], params=FAST)
    result = maps["occlusion"]
    assert result.dtype == np.float32 and result.shape == (112, 112) and np.isfinite(result).all()
    assert (result > 0).any() and (result < 0).any()


def test_deterministic_methods_repeat_exactly(demo_explainer: Explainer, crop: np.ndarray) -> None:
    first = demo_explainer.explain(crop, target=2, methods=GRADIENT_METHODS, params=FAST)
    second = demo_explainer.explain(crop, target=2, methods=list(reversed(GRADIENT_METHODS)), params=FAST)
    for method_id in GRADIENT_METHODS:
        np.testing.assert_array_equal(first[method_id], second[method_id], err_msg=method_id)


def test_target_changes_the_map(demo_explainer: Explainer, crop: np.ndarray) -> None:
    a = demo_explainer.explain(crop, target=2, methods=GRADIENT_METHODS, params=FAST)
    b = demo_explainer.explain(crop, target=5, methods=GRADIENT_METHODS, params=FAST)
    for method_id in GRADIENT_METHODS:
        assert not np.allclose(a[method_id], b[method_id]), method_id


def test_tensor_input_equals_uint8_input(demo_explainer: Explainer, crop: np.ndarray) -> None:
    from_crop = demo_explainer.explain(crop, target=1, methods=["saliency", "deeplift"])
    from_tensor = demo_explainer.explain(preprocess(crop), target=1, methods=["saliency", "deeplift"])
    for method_id in from_crop:
        np.testing.assert_array_equal(from_crop[method_id], from_tensor[method_id])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": 9}, "out of range"),
    ({"target": -1}, "out of range"),
    ({"target": 1.0}, "class index"),
    ({"target": True}, "class index"),
    ({"methods": ["saliency", "lime"]}, "unknown method 'lime'"),
    ({"methods": []}, "no methods"),
    ({"methods": "saliency"}, "sequence of method ids"),
    ({"params": {"smoothgrad": {"samples": 0}}}, "samples must be in"),
    ({"params": {"lime": {}}}, "unknown method 'lime'"),
    ({"params": {"saliency": {"abs": True}}}, "unknown parameter"),
])
def test_invalid_requests_raise_value_error(demo_explainer: Explainer, crop: np.ndarray, kwargs: dict,
                                            message: str) -> None:
    request = {"target": 0, "methods": ["saliency"], **kwargs}
    with pytest.raises(ValueError, match=message):
        demo_explainer.explain(crop, **request)


@pytest.mark.parametrize("bad", [
    np.zeros((112, 112, 3), dtype=np.float32),
    np.zeros((112, 112), dtype=np.uint8),
    np.zeros((96, 112, 3), dtype=np.uint8),
    torch.zeros(3, 112, 112),
    torch.zeros(1, 3, 112, 112, dtype=torch.int64),
    torch.full((1, 3, 112, 112), float("nan")),
    [[0]],
])
def test_invalid_crops_raise_value_error(demo_explainer: Explainer, bad: object) -> None:
    with pytest.raises(ValueError):
        demo_explainer.explain(bad, target=0, methods=["saliency"])  # type: ignore[arg-type]


def test_unknown_gradcam_layer(demo_network: IResNet) -> None:
    with pytest.raises(ValueError, match="layer9"):
        Explainer(demo_network, gradcam_layer="layer9")


def test_gradcam_layer_is_configurable(demo_network: IResNet, crop: np.ndarray) -> None:
    layer3 = Explainer(demo_network, gradcam_layer="layer3").explain(crop, target=8, methods=["gradcam"])
    layer4 = Explainer(demo_network, gradcam_layer="layer4").explain(crop, target=8, methods=["gradcam"])
    assert not np.allclose(layer3["gradcam"], layer4["gradcam"])


def test_shared_network_untouched(shared_network: IResNet, crop: np.ndarray) -> None:
    """No hooks, no mode switch, no frozen parameters, same outputs: the registry model is never modified."""
    x = preprocess(smooth_crop(7))
    with torch.no_grad():
        before_out = shared_network(x)[0].clone()
    before_state = _state(shared_network)
    requires_grad = {name: p.requires_grad for name, p in shared_network.named_parameters()}

    explainer = Explainer(shared_network)
    assert hooks_and_leftovers(shared_network) == []
    seen_hooks: list[str] = []
    explainer.explain(crop, target=3, methods=list(DEFAULT_PANEL), params=FAST,
                      on_map=lambda *_: seen_hooks.extend(hooks_and_leftovers(shared_network)))

    assert seen_hooks == []  # not even while the engine is running
    assert hooks_and_leftovers(shared_network) == []
    assert not shared_network.training
    assert {name: p.requires_grad for name, p in shared_network.named_parameters()} == requires_grad
    assert all(p.grad is None for p in shared_network.parameters())
    for key, value in _state(shared_network).items():
        assert torch.equal(value, before_state[key]), key
    with torch.no_grad():
        assert torch.equal(shared_network(x)[0], before_out)


def test_private_copy_is_clean_after_each_request(demo_network: IResNet, crop: np.ndarray) -> None:
    explainer = Explainer(demo_network)
    explainer.explain(crop, target=3, methods=GRADIENT_METHODS, params=FAST)
    assert hooks_and_leftovers(explainer._network) == []
    assert not any(m.training for m in explainer._network.modules())


def test_private_copy_is_in_eval_mode_even_if_the_shared_model_is_not(demo_network: IResNet,
                                                                       crop: np.ndarray) -> None:
    training = copy.deepcopy(demo_network).train()
    maps = Explainer(training).explain(crop, target=3, methods=["saliency"])
    reference = Explainer(demo_network).explain(crop, target=3, methods=["saliency"])
    np.testing.assert_array_equal(maps["saliency"], reference["saliency"])
    assert training.training  # and the caller's network keeps its own mode


def _count_forwards(explainer: Explainer) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    sizes: list[int] = []
    handle = explainer._network.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    return sizes, handle


def test_passes_are_shared(demo_network: IResNet, crop: np.ndarray) -> None:
    """Saliency, input×gradient and Grad-CAM: one forward; Guided Grad-CAM reuses it and guided backprop."""
    explainer = Explainer(demo_network)
    sizes, handle = _count_forwards(explainer)
    try:
        explainer.explain(crop, target=8, methods=["saliency", "input_x_gradient", "gradcam"])
        assert sizes == [1]
        sizes.clear()
        explainer.explain(crop, target=8, methods=["gradcam", "guided_backprop", "guided_gradcam"])
        assert sizes == [1, 1]
        sizes.clear()
        explainer.explain(crop, target=8, methods=["integrated_gradients", "smoothgrad", "deeplift"],
                          params={"integrated_gradients": {"steps": 20}, "smoothgrad": {"samples": 20}})
        assert sorted(sizes) == sorted([2, 16, 4, 16, 4])  # deeplift: input+baseline; batches of 16
    finally:
        handle.remove()


def test_maps_stream_cheapest_first_and_progress_is_monotone(demo_explainer: Explainer, crop: np.ndarray) -> None:
    order: list[str] = []
    progress: list[float] = []
    requested = ["integrated_gradients", "guided_gradcam", "smoothgrad", "deeplift", "saliency", "deconvolution"]
    maps = demo_explainer.explain(crop, target=3, methods=requested, params=FAST,
                                  on_map=lambda method_id, m: order.append(method_id), on_progress=progress.append)
    assert list(maps) == requested  # results keep the requested order
    # marginal cost in passes: saliency 1, then guided_gradcam 1 (gradient pass done) before deconvolution 1
    # (requested order breaks the tie), deeplift 2, smoothgrad 4 samples, IG 8 steps
    assert order == ["saliency", "guided_gradcam", "deconvolution", "deeplift", "smoothgrad",
                     "integrated_gradients"]
    assert progress[0] == 0.0 and progress[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(progress))
    assert len(set(progress)) > 6  # IG and SmoothGrad report within their passes


def test_works_inside_no_grad_and_inference_mode(demo_explainer: Explainer, crop: np.ndarray) -> None:
    expected = demo_explainer.explain(crop, target=3, methods=["saliency", "gradcam"])
    with torch.no_grad():
        inside_no_grad = demo_explainer.explain(crop, target=3, methods=["saliency", "gradcam"])
    with torch.inference_mode():
        inside_inference = demo_explainer.explain(crop, target=3, methods=["saliency", "gradcam"])
    for method_id in expected:
        np.testing.assert_array_equal(inside_no_grad[method_id], expected[method_id])
        np.testing.assert_array_equal(inside_inference[method_id], expected[method_id])


def test_concurrent_explainers_match_sequential(demo_network: IResNet, odd_slope_network: IResNet) -> None:
    """Two explainers (one per network) and a shared one, on three threads at once, give the sequential maps."""
    jobs = [(demo_network, smooth_crop(11), 2), (odd_slope_network, smooth_crop(12), 5)]
    methods = ["guided_backprop", "deconvolution", "deeplift", "gradcam", "smoothgrad", "integrated_gradients"]
    explainers = [Explainer(network) for network, _, _ in jobs]
    sequential = [e.explain(c, target=t, methods=methods, params=FAST) for e, (_, c, t) in zip(explainers, jobs,
                                                                                               strict=True)]
    results: dict[int, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run(index: int, explainer: Explainer, crop: np.ndarray, target: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                results[index] = explainer.explain(crop, target=target, methods=methods, params=FAST)
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, explainers[i], jobs[i][1], jobs[i][2])) for i in range(2)]
    # a third thread on the first explainer: the instance lock must serialise it with thread 0
    threads.append(threading.Thread(target=run, args=(2, explainers[0], jobs[0][1], jobs[0][2])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index, expected in ((0, sequential[0]), (1, sequential[1]), (2, sequential[0])):
        for method_id in methods:
            np.testing.assert_array_equal(results[index][method_id], expected[method_id], err_msg=method_id)
    for explainer in explainers:
        assert hooks_and_leftovers(explainer._network) == []
