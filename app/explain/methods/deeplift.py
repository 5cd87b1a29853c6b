"""DeepLIFT (Rescale rule) with the PReLU rule, from a constant baseline image.

Captum's DeepLift already batches the input with its baseline (one forward of two images); the only change
is :class:`app.explain.rules.PReLUDeepLift`, without which PReLU is treated as linear and the map no longer
sums to ``f(x) - f(baseline)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from app.explain.methods.base import Context, Method, MethodInfo, ParamSpec
from app.explain.objectives import deeplift_model
from app.explain.rules import PReLUDeepLift

__all__ = ["DEEPLIFT"]

KEY = "deeplift"


def _compute(ctx: Context, params: Mapping[str, Any]) -> Tensor:
    def run(_: Any) -> Tensor:
        x = ctx.input_with_grad()
        baseline = torch.full_like(ctx.x, params["baseline"])
        model = deeplift_model(ctx.model, ctx.network, ctx.objective, ctx.x, baseline)  # similarity: secant line
        return PReLUDeepLift(model).attribute(x, baselines=baseline, target=ctx.target).detach()

    return ctx.run_pass(KEY, run).sum(dim=1)


DEEPLIFT = Method(
    info=MethodInfo(
        id="deeplift",
        label="DeepLIFT",
        signed=True,
        deterministic=True,
        reduction="sum over RGB (signed), so the map sums to f(x) − f(baseline)",
        description="Differences from a baseline image (black by default) propagated with the Rescale rule "
                    "(Shrikumar et al.), PReLU included. Complete, like integrated gradients, at the cost "
                    "of one pass.",
        params=(
            ParamSpec("baseline", -1.0, "float", -1.0, 1.0,
                      description="constant baseline value in the normalised [-1, 1] input; -1 is black"),
        ),
    ),
    passes=lambda _: {KEY: 2.0},
    compute=_compute,
)
