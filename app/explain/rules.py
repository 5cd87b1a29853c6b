"""Captum's modified-gradient methods, taught about PReLU (and the rest of the ReLU family).

GestaltMatcher's iResNets use ``nn.PReLU`` everywhere. Stock Captum 0.8/0.9 gets this silently wrong:

* ``GuidedBackprop`` / ``Deconvolution`` hook only ``nn.ReLU`` modules, so on an iResNet they hook nothing
  and return the *plain gradient* — a map that looks plausible and is mislabelled;
* ``DeepLift`` looks nonlinearities up in a table that lacks PReLU, so PReLU gets the plain gradient instead
  of the Rescale multiplier and the attributions no longer sum to ``f(x) - f(baseline)``.

The classes here are small subclasses that widen those choices and change nothing else, so every other
behaviour (hook bookkeeping, batching of input and baseline, convergence delta) stays Captum's. Captum's
global ``SUPPORTED_NON_LINEAR`` table is deliberately *not* mutated: a subclass is enough, and mutating the
table would change the stock classes for every other user in the process (and the tests that document the
stock behaviour).

Rules, per activation module (``x`` its input, ``g`` the gradient arriving at its output):

* guided backprop: ``relu(g * f'(x))`` — Captum's ReLU rule ``relu(grad_input)`` applied to the module's own
  local derivative, so for PReLU the negative side passes ``relu(g * a)``;
* deconvolution: ``relu(g)`` regardless of the forward input (Captum's rule; it ignores the forward mask);
* DeepLIFT: the Rescale rule ``g * (f(x) - f(x0)) / (x - x0)`` (the plain derivative where ``x ≈ x0``), i.e.
  Captum's ``nonlinear`` rule, which is exact for any elementwise activation.

Every hook goes on whatever model the attribution object is given; the engine only ever gives its private
copy of the network (see :mod:`app.explain.engine`).
"""

from __future__ import annotations

import warnings

import torch
from captum._utils.common import _register_backward_hook
from captum.attr import Deconvolution, DeepLift, GuidedBackprop, GuidedGradCam
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR, nonlinear
from torch import Tensor, nn

__all__ = [
    "DEEPLIFT_RULES",
    "RELU_FAMILY",
    "PReLUDeconvolution",
    "PReLUDeepLift",
    "PReLUGuidedBackprop",
    "PReLUGuidedGradCam",
]

#: Activations whose gradient guided backprop and deconvolution rewrite: piecewise, ReLU-like ones
#: (identity or monotone on the positive side), for which "pass back only positive signal" is meaningful.
RELU_FAMILY: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.PReLU, nn.LeakyReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU,
)

#: DeepLIFT multiplier rule per module type: Captum's table plus the Rescale rule for PReLU.
DEEPLIFT_RULES = {**SUPPORTED_NON_LINEAR, nn.PReLU: nonlinear}

# Captum announces its hooks with a UserWarning on every call. Here the hooks only ever touch a private copy
# and are removed in ``finally``, so the notice is noise in server logs. ``catch_warnings`` would not be
# thread-safe (it swaps the global filter list), so the two exact messages are filtered once instead.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations", category=UserWarning)
warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes on non-linear",
                        category=UserWarning)


class _ReLUFamilyHooks:
    """Mixin: Captum's ModifiedReluGradientAttribution hooks, put on every RELU_FAMILY module, not just ReLU."""

    backward_hooks: list[torch.utils.hooks.RemovableHandle]

    def _register_hooks(self, module: nn.Module) -> None:
        if isinstance(module, RELU_FAMILY):
            self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))  # type: ignore[attr-defined]


class PReLUGuidedBackprop(_ReLUFamilyHooks, GuidedBackprop):
    """Guided backprop whose ``relu(grad_input)`` rule also covers PReLU/LeakyReLU/ELU… modules."""


class PReLUDeconvolution(_ReLUFamilyHooks, Deconvolution):
    """Deconvolution whose ``relu(grad_output)`` rule also covers PReLU/LeakyReLU/ELU… modules."""


class PReLUGuidedGradCam(GuidedGradCam):
    """Captum's GuidedGradCam with the PReLU-aware guided backprop: the reference the engine is tested against."""

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__(model, layer)
        self.guided_backprop = PReLUGuidedBackprop(model)


class PReLUDeepLift(DeepLift):
    """DeepLIFT (Rescale rule) that also applies the rule to PReLU instead of treating it as linear.

    Captum requires every hooked module to be used once per forward (it stores the module's input and output
    on the module); iResNet satisfies that by construction (see :mod:`app.nets.iresnet`).
    """

    def _is_non_linear(self, module: nn.Module) -> bool:
        return type(module) in DEEPLIFT_RULES

    def _backward_hook(self, module: nn.Module, grad_input: Tensor, grad_output: Tensor) -> Tensor:
        if type(module) in SUPPORTED_NON_LINEAR:
            return super()._backward_hook(module, grad_input, grad_output)
        # Same body as Captum's, with the extended table (Captum's indexes its module-level table directly).
        if not self.satisfies_attribute_criteria(module):
            raise RuntimeError(
                f"module {module} lacks the input/output DeepLift stored in its forward pass; "
                "is it used more than once per forward?"
            )
        multipliers = DEEPLIFT_RULES[type(module)](
            module, module.input, module.output, grad_input, grad_output, eps=self.eps,
        )
        del module.input
        del module.output
        return multipliers
