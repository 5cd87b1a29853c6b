"""Saliency, input × gradient and Grad-CAM: three maps from one forward/backward pass.

Captum runs ``Saliency``, ``InputXGradient`` and ``LayerGradCam`` as three separate passes. All three read
the same gradient of the target logit, so this family runs one pass (the ``"gradient"`` pass) that returns
both the input gradient and, through a forward hook on the Grad-CAM layer of the engine's private copy, the
layer's activation and its gradient. The numbers are Captum's: Saliency with ``abs=True``, InputXGradient,
and LayerGradCam with ``relu_attributions=False`` upsampled by ``LayerAttribution.interpolate(..., "bilinear")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from app.explain.methods.base import Context, Method, MethodInfo, Progress, upsample

__all__ = ["GRADCAM", "INPUT_X_GRADIENT", "SALIENCY", "GradientPass", "gradient_pass"]

GRADIENT_KEY = "gradient"


@dataclass(frozen=True)
class GradientPass:
    grad: Tensor  # (1, 3, H, W) d logit / d input
    cam: Tensor  # (1, 1, h, w) signed Grad-CAM at the layer's resolution (before upsampling)


def _layer_output(captured: list[Any]) -> Tensor:
    if len(captured) != 1 or not isinstance(captured[0], Tensor):
        raise RuntimeError("the Grad-CAM layer must run exactly once per forward and return a single tensor")
    return captured[0]


def gradient_pass(ctx: Context) -> GradientPass:
    """Input gradient and Grad-CAM of the target logit, from a single forward/backward pass."""

    def run(_: Progress) -> GradientPass:
        captured: list[Any] = []
        handle = ctx.layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            x = ctx.input_with_grad()
            logits = ctx.model(x)
        finally:
            handle.remove()
        activation = _layer_output(captured)
        grad_x, grad_a = torch.autograd.grad(logits[:, ctx.target].sum(), (x, activation))
        weights = grad_a.mean(dim=tuple(range(2, grad_a.dim())), keepdim=True)  # Grad-CAM's α_k
        cam = (weights * activation).sum(dim=1, keepdim=True)  # signed: no ReLU (DESIGN.md)
        return GradientPass(grad=grad_x.detach(), cam=cam.detach())

    return ctx.run_pass(GRADIENT_KEY, run)


def _one_pass(_: Mapping[str, Any]) -> Mapping[str, float]:
    return {GRADIENT_KEY: 1.0}


def _saliency(ctx: Context, _: Mapping[str, Any]) -> Tensor:
    return gradient_pass(ctx).grad.abs().amax(dim=1)


def _input_x_gradient(ctx: Context, _: Mapping[str, Any]) -> Tensor:
    return (ctx.x * gradient_pass(ctx).grad).sum(dim=1)


def _gradcam(ctx: Context, _: Mapping[str, Any]) -> Tensor:
    return upsample(gradient_pass(ctx).cam, tuple(ctx.x.shape[2:]))[:, 0]


SALIENCY = Method(
    info=MethodInfo(
        id="saliency",
        label="Saliency",
        signed=False,
        deterministic=True,
        reduction="max over RGB of |d logit / d pixel| (Captum Saliency, abs=True)",
        description="Gradient magnitude of the target logit: which pixels a small change would move most. "
                    "Fast and noisy; says nothing about direction.",
    ),
    passes=_one_pass,
    compute=_saliency,
)

INPUT_X_GRADIENT = Method(
    info=MethodInfo(
        id="input_x_gradient",
        label="Input × gradient",
        signed=True,
        deterministic=True,
        reduction="sum over RGB of input × gradient (signed; inputs in [-1, 1], so mid-grey contributes 0)",
        description="Gradient times the (normalised) pixel value: a first-order estimate of each pixel's "
                    "contribution relative to a mid-grey image.",
    ),
    passes=_one_pass,
    compute=_input_x_gradient,
)

GRADCAM = Method(
    info=MethodInfo(
        id="gradcam",
        label="Grad-CAM",
        signed=True,
        deterministic=True,
        reduction="single channel: Σ_k mean(∂logit/∂A_k)·A_k at the model card's gradcam_layer (default "
                  "layer4, 7×7), no ReLU, bilinear upsampling to 112×112",
        description="Class activation map of the last convolutional stage weighted by its average gradient. "
                    "Signed (negative = evidence against the class); coarse, 7×7 cells on iResNet.",
    ),
    passes=_one_pass,
    compute=_gradcam,
)
