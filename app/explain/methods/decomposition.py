"""Similarity decomposition: the objective split exactly over the 7×7 cells of the last feature map.

The arithmetic and why it is exact (and where it is not) are in :mod:`app.explain.decomposition`. For a
similarity objective this is the map on *this* face for its match with the reference; the compare service
runs it a second time on the other face (with this face as reference) for the two-sided view. For a logit
objective it is the exact class activation map of the linear head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.explain.decomposition import decompose, direction_for, spread
from app.explain.methods.base import Context, Method, MethodInfo

__all__ = ["SIMILARITY_DECOMPOSITION"]

KEY = "similarity_decomposition"


def _compute(ctx: Context, _: Mapping[str, Any]) -> np.ndarray:
    def run(_progress: Any) -> np.ndarray:
        if ctx.network is None or ctx.objective is None:
            raise RuntimeError("similarity_decomposition needs the engine's network and objective")
        direction, bias, value = direction_for(ctx.network, ctx.x, ctx.objective)
        return spread(decompose(ctx.network, ctx.x, direction, bias=bias, value=value).grid)

    return ctx.run_pass(KEY, run)


SIMILARITY_DECOMPOSITION = Method(
    info=MethodInfo(
        id="similarity_decomposition",
        label="Similarity decomposition",
        signed=True,
        deterministic=True,
        reduction="single channel: each 7×7 cell's exact share of the objective (the embedding is affine in "
                  "the last feature map), spread evenly over its 16×16 pixels; the map plus a constant equals "
                  "the objective",
        description="Splits the similarity of two faces (or a class logit) exactly into one contribution per "
                    "cell of the last feature map. One forward pass; coarse (7×7) but exact, not approximate.",
    ),
    passes=lambda _: {KEY: 0.5},
    compute=_compute,
)
