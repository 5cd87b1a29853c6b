"""The engine's device: resolving the setting, the CPU path unchanged, and tensors created where the input lives.

These tests run on the CPU. The CUDA comparison (every method's map on a GPU against the CPU) is
bench/gpu_check_explain.py, run on a machine with a GPU. What a GPU run would catch here is a tensor created
without ``device=`` (it lands on the CPU) meeting tensors on the GPU; the *meta* device stands in for the GPU:
mixing a CPU tensor with meta tensors raises just as mixing it with CUDA tensors does, and meta tensors carry
shapes without computing anything.
"""

from __future__ import annotations

import copy
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app.explain import engine
from app.explain.engine import Explainer, LogitsOnly, resolve_device
from app.explain.methods.base import Context
from app.explain.occlusion import InferenceForward, _IncrementalOcclusion, occlusion_windows
from app.explain.registry import METHODS, get_method, normalise_params
from app.explanations.worker import explainer_for
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess
from app.settings import Settings

# every method, with small parameters: the point is where tensors live, not the maps' quality
SMALL = {"integrated_gradients": {"steps": 6}, "smoothgrad": {"samples": 3}, "occlusion": {"window": 28, "stride": 14}}


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA reported present with two devices (nothing is ever run on them: these tests only resolve names)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# --- resolve_device -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["cpu", " CPU ", "Cpu", torch.device("cpu")])
def test_cpu_resolves_to_the_cpu(spec: str | torch.device) -> None:
    assert resolve_device(spec) == torch.device("cpu")


def test_auto_is_the_cpu_without_cuda(no_cuda: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_is_cuda_when_cuda_is_available(two_gpus: None) -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(" AUTO") == torch.device("cuda")


def test_auto_on_this_machine() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_names_resolve_when_present(two_gpus: None) -> None:
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)


def test_a_gpu_index_beyond_the_machine_is_refused(two_gpus: None) -> None:
    with pytest.raises(ValueError, match=r"'cuda:2'.*2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_refused_with_the_reason(no_cuda: None, spec: str | torch.device) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["", "gpu", "GPU", "cuda:", "cuda:-1", "cuda:x", "cuda0", "cpu:0", "mps", "xla",
                                  "auto,cpu", "cuda:0:1"])
def test_malformed_names_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", [torch.device("meta"), 0, None, b"cpu"])
def test_other_devices_and_types_are_refused(spec: Any) -> None:
    with pytest.raises(ValueError, match="device must be"):
        resolve_device(spec)


# --- the setting --------------------------------------------------------------------------------------


def test_the_setting_defaults_to_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GESTALTLENS_DEVICE", raising=False)
    assert Settings().device == "auto"


@pytest.mark.parametrize(("value", "expected"), [("cpu", "cpu"), (" CUDA:1 ", "cuda:1"), ("cuda", "cuda"),
                                                 ("Auto", "auto")])
def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("GESTALTLENS_DEVICE", value)
    assert Settings().device == expected


@pytest.mark.parametrize("value", ["gpu", "cuda:", "0", "cpu cuda"])
def test_a_malformed_setting_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GESTALTLENS_DEVICE", value)
    with pytest.raises(ValidationError, match="GESTALTLENS_DEVICE must be"):
        Settings()


# --- the explainer on the CPU -------------------------------------------------------------------------


def test_the_cpu_explainer_is_the_default_one_bit_for_bit(demo_network: IResNet, demo_explainer: Explainer,
                                                          crop: np.ndarray) -> None:
    explainer = Explainer(demo_network, device="cpu")
    assert explainer.device == demo_explainer.device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in (*explainer._network.parameters(), *explainer._network.buffers()))
    methods = list(METHODS)
    ours = explainer.explain(crop, target=2, methods=methods, params=SMALL)
    default = demo_explainer.explain(crop, target=2, methods=methods, params=SMALL)
    for method in methods:
        assert isinstance(ours[method], np.ndarray)
        assert ours[method].dtype == np.float32 and ours[method].shape == (112, 112)
        np.testing.assert_array_equal(ours[method], default[method], err_msg=method)


def test_a_tensor_crop_gives_the_maps_of_the_array_crop(demo_explainer: Explainer, crop: np.ndarray) -> None:
    methods = ["saliency", "integrated_gradients", "occlusion"]
    from_array = demo_explainer.explain(crop, target=1, methods=methods, params=SMALL)
    from_tensor = demo_explainer.explain(preprocess(crop).double(), target=1, methods=methods, params=SMALL)
    for method in methods:
        np.testing.assert_array_equal(from_tensor[method], from_array[method], err_msg=method)


def test_auto_builds_a_cpu_explainer_without_cuda(demo_network: IResNet, no_cuda: None) -> None:
    assert Explainer(demo_network, device="auto").device == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_an_unusable_device_is_refused_before_any_copy(demo_network: IResNet, no_cuda: None, device: str) -> None:
    with pytest.raises(ValueError, match="device"):
        Explainer(demo_network, device=device)


def test_the_cpu_explainer_leaves_the_float32_switches_alone(demo_explainer: Explainer, crop: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[bool] = []
    real = engine._full_float32_cuda

    def spy() -> Any:
        entered.append(True)
        return real()

    monkeypatch.setattr(engine, "_full_float32_cuda", spy)
    demo_explainer.explain(crop, target=0, methods=["saliency"])
    assert entered == []


# --- the worker ---------------------------------------------------------------------------------------


def _worker_context(device: str) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(device=device), cache={})


def _loaded(network: IResNet) -> Any:
    return SimpleNamespace(version="demo@test", network=network, card=SimpleNamespace(gradcam_layer="layer4"))


def test_the_worker_builds_its_explainer_on_the_configured_device(demo_network: IResNet, no_cuda: None) -> None:
    context, model = _worker_context("auto"), _loaded(demo_network)
    explainer = explainer_for(context, model)
    assert explainer.device == torch.device("cpu")
    assert explainer_for(context, model) is explainer  # kept per model version


def test_the_worker_refuses_a_gpu_it_does_not_have(demo_network: IResNet, no_cuda: None) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        explainer_for(_worker_context("cuda"), _loaded(demo_network))


# --- full float32 on CUDA: the process-wide switches ----------------------------------------------------


def _switches() -> tuple[Any, Any]:
    conv, matmul, name, _ = engine._fp32_switches()
    return getattr(conv, name), getattr(matmul, name)


def test_the_float32_section_sets_and_restores_the_switches() -> None:
    before = _switches()
    full = engine._fp32_switches()[3]
    with engine._full_float32_cuda():
        assert _switches() == (full, full)
    assert _switches() == before


def test_overlapping_float32_sections_restore_once_the_last_one_leaves() -> None:
    before = _switches()
    full = engine._fp32_switches()[3]
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[Any, Any]] = []

    def first() -> None:
        with engine._full_float32_cuda():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with engine._full_float32_cuda():
            second_in.set()
            first_out.wait(5)
            seen.append(_switches())  # the first section has left; this one still runs in full float32

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [(full, full)]
    assert _switches() == before


# --- tensors are created on the input's device (meta stands in for a GPU) --------------------------------


@pytest.fixture(scope="module")
def meta_network(demo_network: IResNet) -> IResNet:
    return copy.deepcopy(demo_network).to("meta").eval().requires_grad_(False)


def _meta_context(network: IResNet, params: dict[str, dict[str, Any]]) -> Context:
    costs: dict[str, float] = {}
    for method_id, method_params in params.items():
        costs.update(get_method(method_id).passes(method_params))
    return Context(model=LogitsOnly(network).eval(), layer=network.layer4, x=torch.zeros(1, 3, 112, 112,
                   device="meta"), target=3, batch_size=4, inference=lambda: InferenceForward(network), costs=costs)


# SmoothGrad draws from a torch.Generator on x.device, which meta cannot have; occlusion needs real numbers for
# its logit differences and is covered below through the incremental evaluator. The similarity decomposition
# works in float64 on the network's tail and returns numpy (tested for exactness in test_objectives.py).
ON_META = [method_id for method_id in METHODS
           if method_id not in {"smoothgrad", "occlusion", "similarity_decomposition"}]


@pytest.mark.parametrize("method_id", ON_META)
def test_gradient_methods_create_their_tensors_on_the_inputs_device(meta_network: IResNet, method_id: str) -> None:
    params = {method_id: normalise_params(method_id, SMALL.get(method_id))}
    ctx = _meta_context(meta_network, params)
    with torch.enable_grad():
        attribution = get_method(method_id).compute(ctx, params[method_id])
    assert isinstance(attribution, torch.Tensor)
    assert attribution.device.type == "meta" and tuple(attribution.shape) == (1, 112, 112)


def test_the_folded_network_lives_on_its_networks_device_and_moves_inputs_there(meta_network: IResNet) -> None:
    forward = InferenceForward(meta_network)
    assert forward.device.type == "meta"
    logits = forward(torch.zeros(2, 3, 112, 112))  # a CPU batch
    assert logits.device.type == "meta" and tuple(logits.shape) == (2, meta_network.num_classes)


def test_incremental_occlusion_keeps_its_geometry_on_the_networks_device(meta_network: IResNet) -> None:
    windows = occlusion_windows(112, 112, 10, 5)
    occlusion = _IncrementalOcclusion(InferenceForward(meta_network), torch.zeros(1, 3, 112, 112), windows, -1.0)
    assert occlusion.blocks_on_crops > 0  # the crop path (index arithmetic on the device) is exercised
    logits = occlusion.logits(slice(100, 117))
    assert logits.device.type == "meta" and tuple(logits.shape) == (17, meta_network.num_classes)
