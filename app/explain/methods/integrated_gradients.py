"""Integrated gradients, with Captum's step points and weights, computed in batches with progress.

Same numbers as ``captum.attr.IntegratedGradients(model).attribute(x, baselines, target, n_steps, method)``:
the step sizes and alphas come from Captum's own ``approximation_parameters``, the scaled inputs are built
the same way (``baseline + alpha * (x - baseline)``) and the weighted gradient sum is multiplied by
``x - baseline``. Doing the loop here (rather than Captum's ``internal_batch_size``) is what lets a long run
report progress per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters
from torch import Tensor

from app.explain.methods.base import Context, Method, MethodInfo, ParamSpec, Progress

__all__ = ["INTEGRATED_GRADIENTS", "integrated_gradients"]

KEY = "integrated_gradients"


def integrated_gradients(ctx: Context, *, steps: int, method: str, baseline: float,
                         on_progress: Progress | None = None) -> Tensor:
    """(1, 3, H, W) IG attribution of the target logit from a constant ``baseline`` image."""
    step_sizes_func, alphas_func = approximation_parameters(method)
    step_sizes, alphas = step_sizes_func(steps), alphas_func(steps)
    x, model = ctx.x, ctx.gradient_model(KEY)
    base = torch.full_like(x, baseline)
    total = torch.zeros_like(x)
    for start in range(0, steps, ctx.batch_size):
        chunk = range(start, min(steps, start + ctx.batch_size))
        scaled = torch.cat([base + alphas[i] * (x - base) for i in chunk]).requires_grad_(True)
        (grads,) = torch.autograd.grad(model(scaled)[:, ctx.target].sum(), scaled)
        weights = torch.tensor([step_sizes[i] for i in chunk], dtype=grads.dtype, device=grads.device)
        weights = weights.view(-1, 1, 1, 1)
        total += (grads * weights).sum(dim=0, keepdim=True)
        if on_progress is not None:
            on_progress(chunk.stop / steps)
    return total * (x - base)


def _compute(ctx: Context, params: Mapping[str, Any]) -> Tensor:
    variant = ctx.fast_variant()  # fast mode: the fewest steps that held the agreement bar here (app.explain.fast_plan)
    steps = params["steps"] if variant is None else variant[0].ig_steps(params["steps"], params["method"])
    attribution = ctx.run_pass(KEY, lambda report: integrated_gradients(
        ctx, steps=steps, method=params["method"], baseline=params["baseline"], on_progress=report))
    return attribution.sum(dim=1)


INTEGRATED_GRADIENTS = Method(
    info=MethodInfo(
        id="integrated_gradients",
        label="Integrated gradients",
        signed=True,
        deterministic=True,
        reduction="sum over RGB (signed), so the map sums to f(x) − f(baseline) up to the quadrature error",
        description="Gradients averaged along the straight path from a baseline image (black by default) to "
                    "the photo, times the difference (Sundararajan et al.). Complete: the map adds up to the "
                    "change in the target logit.",
        params=(
            ParamSpec("steps", 50, "int", 2, 1000,  # Captum's Riemann rules need at least 2
                      description="integration steps (Captum's default 50)"),
            ParamSpec("method", "gausslegendre", "choice", choices=tuple(SUPPORTED_METHODS),
                      description="quadrature rule (Captum's default gausslegendre)"),
            ParamSpec("baseline", -1.0, "float", -1.0, 1.0,
                      description="constant baseline value in the normalised [-1, 1] input; -1 is black"),
        ),
    ),
    passes=lambda params: {KEY: float(params["steps"])},
    compute=_compute,
)
