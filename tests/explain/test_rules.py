"""The PReLU rules: hand-computed on a tiny net, and the bug they fix shown on iResNets.

Stock Captum is run next to the extended classes on purpose: the tests that assert "stock guided backprop
equals the plain gradient on a PReLU net" and "stock DeepLift misses f(x) − f(baseline)" document why
app.explain.rules exists, and would start failing (prompting a look) if Captum ever learned PReLU itself.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, DeepLift, GuidedBackprop
from torch import Tensor, nn

from app.explain.engine import LogitsOnly
from app.explain.rules import PReLUDeconvolution, PReLUDeepLift, PReLUGuidedBackprop
from app.nets.iresnet import IResNet
from app.nets.preprocess import preprocess
from tests.explain.conftest import smooth_crop

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def hooks_and_leftovers(model: nn.Module) -> list[str]:
    """Every hook on any submodule, and any attribute Captum's DeepLift stores on modules and forgot."""
    found = []
    for name, module in model.named_modules():
        found += [f"{name or '<root>'}.{attr}" for attr in HOOK_DICTS if getattr(module, attr, None)]
        found += [f"{name or '<root>'}.{attr}" for attr in ("input", "output", "input_ref") if hasattr(module, attr)]
    return found


class Tiny(nn.Module):
    """x (4) → Linear → PReLU (3 slopes) → Linear → 2 outputs, with weights chosen to mix signs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.PReLU(3)
        self.fc2 = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.5, 1.0, -1.0, 2.0], [-1.0, 0.5, 1.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
            self.act.weight.copy_(torch.tensor([0.25, -0.5, 0.1]))
            self.fc2.weight.copy_(torch.tensor([[1.0, -1.5, 2.0], [0.3, 0.2, -0.1]]))
            self.fc2.bias.copy_(torch.tensor([0.05, 0.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


X = torch.tensor([[1.0, 1.0, -0.5, 0.25]])  # h = fc1(x) = (-1.15, -0.45, -0.75): all on the slope side
X2 = torch.tensor([[0.5, -1.0, 0.5, 1.0]])  # h = (2.85, 1.8, -0.2): mixed


def prelu(h: Tensor, a: Tensor) -> Tensor:
    return torch.where(h > 0, h, a * h)


@pytest.mark.parametrize("x", [X, X2])
def test_tiny_net_rules_match_hand_computation(x: Tensor) -> None:
    net = Tiny().eval()
    w1, b1, a, w2 = net.fc1.weight, net.fc1.bias, net.act.weight, net.fc2.weight[0]
    with torch.no_grad():
        h = x[0] @ w1.T + b1
        local = torch.where(h > 0, torch.ones_like(h), a)  # PReLU's derivative
        plain = w1.T @ (w2 * local)
        guided = w1.T @ torch.relu(w2 * local)
        deconv = w1.T @ torch.relu(w2)
        x0 = torch.full_like(x, -1.0)
        h0 = x0[0] @ w1.T + b1
        rescale = (prelu(h, a) - prelu(h0, a)) / (h - h0)
        deeplift = (x - x0)[0] * (w1.T @ (w2 * rescale))
        delta = net(x)[0, 0] - net(x0)[0, 0]

    def attr(cls: type, **kw: object) -> Tensor:
        return cls(net).attribute(x.clone().requires_grad_(True), target=0, **kw).detach()[0]

    assert not torch.allclose(guided, plain) or not torch.allclose(deconv, plain)  # the case is not degenerate
    torch.testing.assert_close(attr(PReLUGuidedBackprop), guided)
    torch.testing.assert_close(attr(PReLUDeconvolution), deconv)
    torch.testing.assert_close(attr(PReLUDeepLift, baselines=x0), deeplift)
    torch.testing.assert_close(deeplift.sum(), delta)
    # stock Captum: nothing hooked on PReLU, so guided backprop and deconvolution are the plain gradient
    torch.testing.assert_close(attr(GuidedBackprop), plain)
    torch.testing.assert_close(attr(Deconvolution), plain)
    assert hooks_and_leftovers(net) == []


def test_relu_network_unchanged_by_the_extension() -> None:
    """On a ReLU net the extended classes are exactly Captum's: the rule generalises, it does not alter."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 16 * 16, 4)).eval()
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    for extended, stock in ((PReLUGuidedBackprop, GuidedBackprop), (PReLUDeconvolution, Deconvolution)):
        torch.testing.assert_close(extended(net).attribute(x, target=1), stock(net).attribute(x, target=1))
    base = torch.zeros_like(x)
    torch.testing.assert_close(PReLUDeepLift(net).attribute(x, base, target=1),
                               DeepLift(net).attribute(x, base, target=1))


def _input(seed: int = 0) -> Tensor:
    return preprocess(smooth_crop(seed)).requires_grad_(True)


def _plain_gradient(model: nn.Module, x: Tensor, target: int) -> Tensor:
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return grad


def _relative(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("net_name", ["demo_network", "odd_slope_network"])
def test_guided_backprop_and_deconvolution_on_prelu_iresnet(net_name: str, request: pytest.FixtureRequest) -> None:
    network: IResNet = request.getfixturevalue(net_name)
    model = LogitsOnly(copy.deepcopy(network)).eval()
    x, target = _input(), 2
    plain = _plain_gradient(model, x, target)
    # the bug: stock Captum hooks no nn.ReLU here, so both methods silently return the plain gradient
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=target), plain)
    torch.testing.assert_close(Deconvolution(model).attribute(x, target=target), plain)
    # the fix: the PReLU rule changes the map substantially
    guided = PReLUGuidedBackprop(model).attribute(x, target=target)
    deconv = PReLUDeconvolution(model).attribute(x, target=target)
    assert _relative(guided, plain) > 0.3
    assert _relative(deconv, plain) > 0.3
    assert _relative(deconv, guided) > 0.3
    assert hooks_and_leftovers(model) == []


@pytest.mark.parametrize("net_name", ["demo_network", "random_network", "odd_slope_network"])
def test_deeplift_sums_to_delta_on_prelu_iresnet(net_name: str, request: pytest.FixtureRequest) -> None:
    network: IResNet = request.getfixturevalue(net_name)
    model = LogitsOnly(copy.deepcopy(network)).eval()
    x = _input(1)
    baseline = torch.full_like(x, -1.0)
    with torch.no_grad():
        deltas = model(x.detach())[0] - model(baseline)[0]
    for target in (0, 4):
        attribution, convergence = PReLUDeepLift(model).attribute(
            x, baselines=baseline, target=target, return_convergence_delta=True)
        expected = float(deltas[target])
        assert abs(expected) > 0.1  # the check is not vacuous
        assert abs(float(attribution.detach().sum()) - expected) < 1e-4 * max(1.0, abs(expected))
        assert abs(float(convergence[0])) < 1e-4 * max(1.0, abs(expected))
    assert hooks_and_leftovers(model) == []


def test_stock_deeplift_misses_delta_on_prelu_iresnet(odd_slope_network: IResNet) -> None:
    """Stock Captum treats PReLU as linear: its attributions do not add up to the change of the logit."""
    model = LogitsOnly(copy.deepcopy(odd_slope_network)).eval()
    x = _input(1)
    baseline = torch.full_like(x, -1.0)
    with torch.no_grad():
        expected = float(model(x.detach())[0, 4] - model(baseline)[0, 4])
    stock = DeepLift(model).attribute(x, baselines=baseline, target=4).detach()
    fixed = PReLUDeepLift(model).attribute(x, baselines=baseline, target=4).detach()
    stock_error = abs(float(stock.sum()) - expected)
    fixed_error = abs(float(fixed.sum()) - expected)
    assert stock_error > 0.3 * abs(expected)
    assert fixed_error < stock_error / 100
    assert not np.allclose(stock.numpy(), fixed.numpy(), atol=1e-4)
