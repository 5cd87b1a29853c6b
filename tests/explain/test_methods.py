"""Each method: the engine's map against Captum's own class with the same parameters, and its properties.

References are computed here, independently of the engine's shared passes: stock Captum where Captum is
right (Saliency, InputXGradient, IntegratedGradients, NoiseTunnel, LayerGradCam, Occlusion) and Captum with
the PReLU rules of app.explain.rules where it is not (GuidedBackprop, Deconvolution, DeepLift,
GuidedGradCam). Grad-CAM is also checked against a computation written out by hand.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor

from app.explain.engine import Explainer, LogitsOnly
from app.explain.registry import DEFAULT_PANEL, METHODS, method_info, normalise_params
from app.explain.rules import PReLUDeconvolution, PReLUDeepLift, PReLUGuidedBackprop, PReLUGuidedGradCam
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess

DESIGN_IDS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift",
              "guided_backprop", "deconvolution", "gradcam", "guided_gradcam", "occlusion")
TARGET = 8  # on the demo model and this crop, a class whose Grad-CAM has both signs
SG = {"samples": 6, "noise": 0.15, "seed": 3}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def assert_same_map(ours: np.ndarray, reference: Tensor | np.ndarray) -> None:
    ref = reference.detach().numpy() if isinstance(reference, Tensor) else reference
    ref = ref.reshape(ours.shape).astype(np.float32)
    assert np.abs(ref).max() > 0, "reference map is all zeros: the comparison would be vacuous"
    assert correlation(ours, ref) > 0.99999
    # Same arithmetic, other float32 order: the engine batches passes that Captum runs one by one, and oneDNN
    # picks its convolution algorithm by batch shape and ISA. On an AVX2-only AMD EPYC that moved a few pixels
    # of the gradient maps by up to 0.3 % of the map's maximum (1e-6 on the AMX Xeon); a real difference in
    # the method (a missing rule, a wrong baseline) moves the correlation far below 0.99999.
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=5e-3 * float(np.abs(ref).max()))


def _sum_rgb(t: Tensor) -> Tensor:
    return t.detach().sum(dim=1)[0]


@pytest.fixture(scope="module")
def panel(demo_network: IResNet, crop: np.ndarray) -> dict[str, np.ndarray]:
    """Engine maps of every method but occlusion (compared below with a coarser stride: Captum's is slow)."""
    explainer = Explainer(demo_network)
    methods = [m for m in DEFAULT_PANEL if m != "occlusion"]
    return explainer.explain(crop, target=TARGET, methods=methods, params={"smoothgrad": SG})


@pytest.fixture(scope="module")
def reference_model(demo_network: IResNet) -> LogitsOnly:
    return LogitsOnly(copy.deepcopy(demo_network)).eval()


REFERENCES: dict[str, Callable[[LogitsOnly, Tensor], Tensor]] = {
    "saliency": lambda m, x: Saliency(m).attribute(x, target=TARGET).detach().abs().amax(dim=1)[0],
    "input_x_gradient": lambda m, x: _sum_rgb(InputXGradient(m).attribute(x, target=TARGET)),
    "integrated_gradients": lambda m, x: _sum_rgb(IntegratedGradients(m).attribute(
        x, baselines=torch.full_like(x, -1.0), target=TARGET, n_steps=50, method="gausslegendre")),
    "deeplift": lambda m, x: _sum_rgb(PReLUDeepLift(m).attribute(x, baselines=torch.full_like(x, -1.0),
                                                                  target=TARGET)),
    "guided_backprop": lambda m, x: _sum_rgb(PReLUGuidedBackprop(m).attribute(x, target=TARGET)),
    "deconvolution": lambda m, x: _sum_rgb(PReLUDeconvolution(m).attribute(x, target=TARGET)),
    "gradcam": lambda m, x: LayerAttribution.interpolate(
        LayerGradCam(m, m.network.layer4).attribute(x, target=TARGET, relu_attributions=False),
        (112, 112), "bilinear").detach()[0, 0],
    "guided_gradcam": lambda m, x: _sum_rgb(PReLUGuidedGradCam(m, m.network.layer4).attribute(
        x, target=TARGET, interpolate_mode="bilinear")),
}


@pytest.mark.parametrize("method_id", sorted(REFERENCES))
def test_engine_matches_captum(method_id: str, panel: dict[str, np.ndarray], reference_model: LogitsOnly,
                               crop: np.ndarray) -> None:
    x = preprocess(crop).requires_grad_(True)
    assert_same_map(panel[method_id], REFERENCES[method_id](reference_model, x))


def test_smoothgrad_matches_captum_noise_tunnel(panel: dict[str, np.ndarray], reference_model: LogitsOnly,
                                                crop: np.ndarray) -> None:
    """Same seed, same noise: the private generator draws what NoiseTunnel draws after manual_seed."""
    x = preprocess(crop).requires_grad_(True)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SG["seed"])
        reference = NoiseTunnel(Saliency(reference_model)).attribute(
            x, nt_type="smoothgrad", nt_samples=SG["samples"], stdevs=SG["noise"] * 2.0, target=TARGET)
    finally:
        torch.random.set_rng_state(state)
    assert_same_map(panel["smoothgrad"], reference.detach().amax(dim=1)[0])


def _cam_by_hand(network: IResNet, crop: np.ndarray, target: int) -> Tensor:
    """Grad-CAM at layer4 written out: channel weight = spatial mean of ∂logit/∂A_k, Σ_k weight·A_k, no ReLU."""
    network = copy.deepcopy(network).eval()
    stored: dict[str, Tensor] = {}
    handle = network.layer4.register_forward_hook(lambda _m, _i, out: stored.setdefault("a", out))
    try:
        logits, _ = network(preprocess(crop))
    finally:
        handle.remove()
    activation = stored["a"]  # (1, C, 7, 7)
    (grad,) = torch.autograd.grad(logits[0, target], activation)
    cam = torch.zeros(activation.shape[2:])
    for k in range(activation.shape[1]):
        cam += grad[0, k].mean() * activation[0, k].detach()
    return cam


def _bilinear(cam: Tensor) -> np.ndarray:
    return F.interpolate(cam[None, None], size=(112, 112), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_gradcam_by_hand(panel: dict[str, np.ndarray], demo_network: IResNet, crop: np.ndarray) -> None:
    cam = _cam_by_hand(demo_network, crop, TARGET)
    assert (cam > 0).any() and (cam < 0).any()  # signed, so a ReLU would show
    np.testing.assert_allclose(panel["gradcam"], _bilinear(cam), rtol=1e-4, atol=1e-6)


def test_guided_gradcam_is_guided_backprop_times_positive_gradcam(
        panel: dict[str, np.ndarray], demo_network: IResNet, crop: np.ndarray) -> None:
    """Selvaraju et al.: guided backprop ⊙ upsampled ReLU(Grad-CAM) (ReLU on the 7×7 cells, as Captum does)."""
    cam = _cam_by_hand(demo_network, crop, TARGET)
    expected = panel["guided_backprop"] * _bilinear(torch.relu(cam))
    assert (expected == 0).any() and (expected != 0).any()
    np.testing.assert_allclose(panel["guided_gradcam"], expected, rtol=1e-4, atol=1e-7)


def test_integrated_gradients_completeness(demo_network: IResNet, crop: np.ndarray) -> None:
    """Σ IG map ≈ f(x) − f(baseline), for two baselines and two targets (quadrature error of a few %)."""
    explainer = Explainer(demo_network)
    x = preprocess(crop)
    for target, baseline in ((TARGET, -1.0), (1, 0.0)):
        with torch.no_grad():
            delta = float(demo_network(x)[0][0, target] - demo_network(torch.full_like(x, baseline))[0][0, target])
        ig = explainer.explain(crop, target=target, methods=["integrated_gradients"],
                               params={"integrated_gradients": {"steps": 64, "baseline": baseline}})
        assert abs(delta) > 0.5
        assert abs(float(ig["integrated_gradients"].sum()) - delta) < 0.02 * abs(delta)


def test_integrated_gradients_with_too_few_steps_is_incomplete(demo_network: IResNet, crop: np.ndarray) -> None:
    """The completeness check can fail: one Riemann step is gradient × (x − baseline) at one point."""
    explainer = Explainer(demo_network)
    x = preprocess(crop)
    with torch.no_grad():
        delta = float(demo_network(x)[0][0, TARGET] - demo_network(torch.full_like(x, -1.0))[0][0, TARGET])
    ig = explainer.explain(crop, target=TARGET, methods=["integrated_gradients"],
                           params={"integrated_gradients": {"steps": 2, "method": "riemann_right"}})
    assert abs(float(ig["integrated_gradients"].sum()) - delta) > 0.1 * abs(delta)


@pytest.mark.parametrize("net_name", ["demo_network", "odd_slope_network"])
def test_deeplift_map_sums_to_delta(net_name: str, request: pytest.FixtureRequest, crop: np.ndarray) -> None:
    network: IResNet = request.getfixturevalue(net_name)
    x = preprocess(crop)
    maps = Explainer(network).explain(crop, target=TARGET, methods=["deeplift"])
    with torch.no_grad():
        delta = float(network(x)[0][0, TARGET] - network(torch.full_like(x, -1.0))[0][0, TARGET])
    assert abs(delta) > 0.1
    assert abs(float(maps["deeplift"].sum(dtype=np.float64)) - delta) < 1e-4 * max(1.0, abs(delta))


def test_guided_backprop_differs_from_saliency(panel: dict[str, np.ndarray], reference_model: LogitsOnly,
                                               crop: np.ndarray) -> None:
    """With the PReLU rule the guided map is not the gradient map (stock Captum's would be identical)."""
    x = preprocess(crop).requires_grad_(True)
    plain = _sum_rgb(Saliency(reference_model).attribute(x, target=TARGET, abs=False)).numpy()
    assert correlation(panel["guided_backprop"], plain) < 0.9
    assert correlation(panel["deconvolution"], plain) < 0.9


def test_smoothgrad_seed(demo_explainer: Explainer, crop: np.ndarray) -> None:
    def run(seed: int) -> np.ndarray:
        return demo_explainer.explain(crop, target=TARGET, methods=["smoothgrad"],
                                      params={"smoothgrad": {**SG, "seed": seed}})["smoothgrad"]

    first, again, other = run(5), run(5), run(6)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert correlation(first, other) > 0.5  # different noise, same underlying saliency


def test_smoothgrad_noise_is_a_fraction_of_the_input_range(demo_explainer: Explainer, crop: np.ndarray) -> None:
    maps = demo_explainer.explain(crop, target=TARGET, methods=["saliency", "smoothgrad"],
                                  params={"smoothgrad": {**SG, "noise": 0.0}})
    np.testing.assert_allclose(maps["smoothgrad"], maps["saliency"], rtol=1e-5, atol=1e-8)


def test_occlusion_matches_captum(demo_explainer: Explainer, reference_model: LogitsOnly, crop: np.ndarray) -> None:
    params = {"window": 10, "stride": 8, "baseline": -1.0}
    ours = demo_explainer.explain(crop, target=TARGET, methods=["occlusion"], params={"occlusion": params})
    x = preprocess(crop)
    with torch.no_grad():
        reference = Occlusion(reference_model).attribute(
            x, sliding_window_shapes=(3, 10, 10), strides=(3, 8, 8), baselines=-1.0, target=TARGET)
    assert_same_map(ours["occlusion"], reference[0, 0])


# --- registry ---------------------------------------------------------------------------------------------


def test_registry_lists_the_design_methods_in_order() -> None:
    assert tuple(METHODS) == (*DESIGN_IDS, "similarity_decomposition")  # the decomposition is asked for by name
    assert DEFAULT_PANEL == DESIGN_IDS
    for method_id, info in METHODS.items():
        assert info.id == method_id
        assert info.label and info.reduction and info.description
        assert normalise_params(method_id, None) == dict(sorted(info.defaults.items()))
    assert not METHODS["saliency"].signed and not METHODS["smoothgrad"].signed
    assert METHODS["gradcam"].signed and METHODS["occlusion"].signed
    assert not METHODS["smoothgrad"].deterministic and METHODS["integrated_gradients"].deterministic


def test_method_info_unknown_is_value_error() -> None:
    assert method_info("gradcam").label == "Grad-CAM"
    with pytest.raises(ValueError, match="unknown method 'lime'; known: saliency, input_x_gradient"):
        method_info("lime")


def test_defaults() -> None:
    assert normalise_params("integrated_gradients", None) == {"baseline": -1.0, "method": "gausslegendre",
                                                              "steps": 50}
    assert normalise_params("smoothgrad", {}) == {"noise": 0.15, "samples": 25, "seed": 0}
    assert normalise_params("occlusion", {}) == {"baseline": -1.0, "stride": 5, "window": 10}
    assert normalise_params("deeplift", {}) == {"baseline": -1.0}
    assert normalise_params("saliency", {}) == {}


def test_normalise_params_is_canonical_and_json_serialisable() -> None:
    a = normalise_params("smoothgrad", {"seed": 7, "samples": 10.0, "noise": np.float32(0.25)})
    b = normalise_params("smoothgrad", {"noise": 0.25, "samples": np.int64(10), "seed": 7})
    assert a == b == {"noise": 0.25, "samples": 10, "seed": 7}
    assert json.dumps(a) == json.dumps(b)
    assert type(a["samples"]) is int and type(a["noise"]) is float
    assert normalise_params("deeplift", {"baseline": 0})["baseline"] == 0.0


@pytest.mark.parametrize(("method_id", "params", "message"), [
    ("smoothgrad", {"sample": 3}, "unknown parameter.*sample.*known: samples"),
    ("saliency", {"abs": False}, "unknown parameter.*known: none"),
    ("smoothgrad", {"samples": 0}, r"smoothgrad.samples must be in \[1"),
    ("smoothgrad", {"samples": 2.5}, "must be an integer"),
    ("smoothgrad", {"samples": True}, "must be a number"),
    ("smoothgrad", {"noise": "0.1"}, "must be a number"),
    ("smoothgrad", {"noise": float("nan")}, "must be finite"),
    ("smoothgrad", {"seed": -1}, "seed must be in"),
    ("integrated_gradients", {"steps": 1001}, "steps must be in"),
    ("integrated_gradients", {"steps": 1}, "steps must be in"),
    ("integrated_gradients", {"method": "simpson"}, "method must be one of .*gausslegendre"),
    ("deeplift", {"baseline": 1.5}, "baseline must be in"),
    ("occlusion", {"window": 0}, "window must be in"),
    ("occlusion", {"window": 4, "stride": 5}, "stride .* must not exceed"),
    ("gradcam", ["layer"], "must be a mapping"),
    ("nope", {}, "unknown method"),
])
def test_normalise_params_rejects(method_id: str, params: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_params(method_id, params)  # type: ignore[arg-type]
