"""Occlusion: the drop in the target logit when a black square hides each part of the face.

The sliding-window computation lives in :mod:`app.explain.occlusion` (batched and incremental, on the
no-grad, BatchNorm-folded inference copy the engine builds once per Explainer); this module only describes
the method and calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.explain.methods.base import Context, Method, MethodInfo, ParamSpec
from app.explain.occlusion import occlusion_map

__all__ = ["OCCLUDED_IMAGE_COST", "OCCLUSION", "window_count"]

KEY = "occlusion"
#: Cost of one occluded image relative to one forward+backward: a forward only, evaluated incrementally
#: (measured ≈ 0.2-0.25 on iResNet-50 with app.explain.occlusion; a rough weight for progress only).
OCCLUDED_IMAGE_COST = 0.25


def window_count(size: int, window: int, stride: int) -> int:
    """Window positions Captum's Occlusion uses on a size×size input: 0, s, 2s, … until the image is covered."""
    per_axis = 1 + max(0, -(-(size - window) // stride))
    return per_axis * per_axis


def _compute(ctx: Context, params: Mapping[str, Any]) -> np.ndarray:
    variant = ctx.fast_variant()  # fast mode: the plan's network, coarse to fine (app.explain.fast_plan)
    if variant is None:
        forward, refine = ctx.inference(), None
    else:
        plan, networks = variant
        forward = networks.occlusion_forward(plan.choice(KEY).precision)
        refine = plan.occlusion_refine(params["window"], params["stride"])
    return ctx.run_pass(KEY, lambda report: occlusion_map(
        forward, ctx.x, target=ctx.target, window=params["window"], stride=params["stride"],
        baseline=params["baseline"], on_progress=report, refine=refine))


def _check(params: Mapping[str, Any]) -> None:
    if params["stride"] > params["window"]:
        raise ValueError(f"occlusion.stride ({params['stride']}) must not exceed occlusion.window "
                         f"({params['window']}): pixels between windows would never be occluded")


OCCLUSION = Method(
    info=MethodInfo(
        id="occlusion",
        label="Occlusion",
        signed=True,
        deterministic=True,
        reduction="single channel (the square covers all of RGB): mean over the windows covering a pixel of "
                  "f(x) − f(x with the window black)",
        description="Slides a black square over the face and records how much the target logit drops "
                    "(Zeiler & Fergus). Model-agnostic and intuitive; blurred at the scale of the window.",
        params=(
            ParamSpec("window", 10, "int", 1, 112, description="side of the black square, pixels"),
            ParamSpec("stride", 5, "int", 1, 112, description="step between window positions, pixels"),
            ParamSpec("baseline", -1.0, "float", -1.0, 1.0,
                      description="value inside the square in the normalised [-1, 1] input; -1 is black"),
        ),
    ),
    passes=lambda params: {KEY: OCCLUDED_IMAGE_COST * window_count(112, params["window"], params["stride"])},
    compute=_compute,
    check=_check,
)
