"""Guided backprop, deconvolution and Guided Grad-CAM, with the PReLU rules of :mod:`app.explain.rules`.

Guided Grad-CAM is not recomputed: Captum's ``GuidedGradCam`` runs Grad-CAM and guided backprop again,
while here it is the product of the guided-backprop pass and the Grad-CAM of the shared gradient pass.
Because the upsampled Grad-CAM map is one channel broadcast over RGB, summing ``gb ⊙ cam`` over RGB equals
``cam · Σ_rgb gb`` — the same numbers as Captum's GuidedGradCam (with the PReLU-aware guided backprop and
``interpolate_mode="bilinear"``) followed by this family's channel sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from app.explain.methods.base import Context, Method, MethodInfo, Progress, upsample
from app.explain.methods.gradient import GRADIENT_KEY, gradient_pass
from app.explain.rules import PReLUDeconvolution, PReLUGuidedBackprop

__all__ = ["DECONVOLUTION", "GUIDED_BACKPROP", "GUIDED_GRADCAM", "guided_backprop_pass"]

GUIDED_KEY = "guided_backprop"
DECONV_KEY = "deconvolution"


def guided_backprop_pass(ctx: Context) -> Tensor:
    """(1, 3, H, W) guided-backprop attribution of the target logit (PReLU-aware)."""

    def run(_: Progress) -> Tensor:
        return PReLUGuidedBackprop(ctx.model).attribute(ctx.input_with_grad(), target=ctx.target).detach()

    return ctx.run_pass(GUIDED_KEY, run)


def _deconvolution_pass(ctx: Context) -> Tensor:
    def run(_: Progress) -> Tensor:
        return PReLUDeconvolution(ctx.model).attribute(ctx.input_with_grad(), target=ctx.target).detach()

    return ctx.run_pass(DECONV_KEY, run)


def _guided_backprop(ctx: Context, _: Mapping[str, Any]) -> Tensor:
    return guided_backprop_pass(ctx).sum(dim=1)


def _deconvolution(ctx: Context, _: Mapping[str, Any]) -> Tensor:
    return _deconvolution_pass(ctx).sum(dim=1)


def _guided_gradcam(ctx: Context, _: Mapping[str, Any]) -> Tensor:
    # Captum's order: ReLU at the layer's resolution, then upsample (bilinear keeps it non-negative).
    cam = upsample(torch.relu(gradient_pass(ctx).cam), tuple(ctx.x.shape[2:]))
    return (guided_backprop_pass(ctx) * cam).sum(dim=1)


GUIDED_BACKPROP = Method(
    info=MethodInfo(
        id="guided_backprop",
        label="Guided backprop",
        signed=True,
        deterministic=True,
        reduction="sum over RGB (signed)",
        description="Gradient in which every ReLU-family activation (PReLU included) passes back only "
                    "positive signal, relu(g·f'(x)). Sharp edges; known to be weakly class-sensitive.",
    ),
    passes=lambda _: {GUIDED_KEY: 1.0},
    compute=_guided_backprop,
)

DECONVOLUTION = Method(
    info=MethodInfo(
        id="deconvolution",
        label="Deconvolution",
        signed=True,
        deterministic=True,
        reduction="sum over RGB (signed)",
        description="Zeiler–Fergus deconvnet: every ReLU-family activation (PReLU included) passes back "
                    "relu(incoming gradient), ignoring its forward input.",
    ),
    passes=lambda _: {DECONV_KEY: 1.0},
    compute=_deconvolution,
)

GUIDED_GRADCAM = Method(
    info=MethodInfo(
        id="guided_gradcam",
        label="Guided Grad-CAM",
        signed=True,
        deterministic=True,
        reduction="sum over RGB of guided backprop ⊙ bilinear-upsampled ReLU(Grad-CAM) (signed)",
        description="Guided backprop masked by the positive part of Grad-CAM (Selvaraju et al.): "
                    "fine detail restricted to regions that count for the class.",
    ),
    passes=lambda _: {GRADIENT_KEY: 1.0, GUIDED_KEY: 1.0},
    compute=_guided_gradcam,
)
