"""Fixtures for the explanation tests: one torch thread, PReLU networks that respond to their input, crops.

One thread for the same reason as tests/nets/conftest.py (spinning OpenMP workers on shared cores).

The networks are session-scoped and must not be mutated by tests (tests that need hooks or changes take a
``copy.deepcopy``). Three PReLU nets, because a rule that only works on one kind of weights proves little:

* ``demo_network`` — the shipped demo model (trained iResNet-18 at width 0.25, PReLU slopes as trained);
* ``random_network`` — the same shape with ``randomise_`` weights and convolutions ×3: ``randomise_`` alone
  leaves the net nearly constant in its input (f(x) − f(black) ≈ 0.003), which would make completeness
  checks vacuous;
* ``odd_slope_network`` — ``random_network`` with every PReLU slope drawn from {0.25, −0.5}, so treating
  PReLU as linear (stock Captum DeepLift) is measurably wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from app.explain.engine import Explainer
from app.nets.iresnet import IResNet, iresnet18
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT
from tests.nets.helpers import responsive, single_torch_thread


def pytest_configure(config: pytest.Config) -> None:
    # app.explain.rules silences these two Captum notices at import, but pytest restores the warning filters
    # after collecting, so the filter has to be stated for pytest as well.
    for message in ("Setting backward hooks on ReLU activations",
                    "Setting forward, backward hooks and attributes on non-linear"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:UserWarning")


@pytest.fixture(scope="session", autouse=True)
def fast_plans_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fast mode's measured plans (app.explain.fast_plan) go to a session directory, not the checkout's var/."""
    from app.explain import fast_plan

    fast_plan.set_plan_directory(tmp_path_factory.mktemp("fast_plans"))
    yield
    fast_plan.set_plan_directory(None)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def smooth_crop(seed: int) -> np.ndarray:
    """An image-like uint8 (112, 112, 3) crop: bicubic-upsampled 14x14 colour noise plus a little grain."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 14, 14)).astype(np.float32))
    image = F.interpolate(coarse, size=(112, 112), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    image = image.numpy() + rng.normal(0, 4, (112, 112, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def set_prelu_slopes(network: nn.Module, values: tuple[float, ...], seed: int) -> nn.Module:
    """Every PReLU slope drawn at random from ``values`` (in place)."""
    g = torch.Generator().manual_seed(seed)
    choices = torch.tensor(values)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.PReLU):
                index = torch.randint(len(values), module.weight.shape, generator=g)
                module.weight.copy_(choices[index])
    return network


@pytest.fixture(scope="session")
def demo_network() -> IResNet:
    return load_model(PROJECT_ROOT / "models", "demo").network


@pytest.fixture(scope="session")
def random_network() -> IResNet:
    return responsive(iresnet18(num_classes=9, width=0.25), seed=1)


@pytest.fixture(scope="session")
def odd_slope_network(random_network: IResNet) -> IResNet:
    return set_prelu_slopes(copy.deepcopy(random_network), (0.25, -0.5), seed=2)


@pytest.fixture(scope="session")
def crop() -> np.ndarray:
    return smooth_crop(0)


@pytest.fixture(scope="session")
def demo_explainer(demo_network: IResNet) -> Explainer:
    return Explainer(demo_network)
