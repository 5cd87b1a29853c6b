"""One module per attribution method (or per family sharing a pass); ``ALL`` lists them in display order.

Adding a method: write a module that defines a :class:`~app.explain.methods.base.Method` (its description,
parameters, passes with their cost, and ``compute``) and add it to ``ALL``. The registry and the engine pick
it up from there.
"""

from __future__ import annotations

from app.explain.methods.base import Method
from app.explain.methods.decomposition import SIMILARITY_DECOMPOSITION
from app.explain.methods.deeplift import DEEPLIFT
from app.explain.methods.gradient import GRADCAM, INPUT_X_GRADIENT, SALIENCY
from app.explain.methods.guided import DECONVOLUTION, GUIDED_BACKPROP, GUIDED_GRADCAM
from app.explain.methods.integrated_gradients import INTEGRATED_GRADIENTS
from app.explain.methods.occlusion import OCCLUSION
from app.explain.methods.smoothgrad import SMOOTHGRAD

__all__ = ["ALL"]

#: Every method, in the design's display order; the similarity decomposition (issue 9) comes last and is not
#: part of the default panel (see :data:`app.explain.registry.DEFAULT_PANEL`).
ALL: tuple[Method, ...] = (
    SALIENCY,
    INPUT_X_GRADIENT,
    INTEGRATED_GRADIENTS,
    SMOOTHGRAD,
    DEEPLIFT,
    GUIDED_BACKPROP,
    DECONVOLUTION,
    GRADCAM,
    GUIDED_GRADCAM,
    OCCLUSION,
    SIMILARITY_DECOMPOSITION,
)
