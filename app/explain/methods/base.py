"""What an attribution method module provides, and the per-request context the engine hands it.

A method is a :class:`Method`: its public description (:class:`MethodInfo`, shown by the web app and stored
with results), its parameters (:class:`ParamSpec`, validated and canonicalised because they are part of a
results-cache key), the *passes* it needs with their rough cost, and a ``compute`` function.

Passes are the unit of sharing: saliency, input×gradient and Grad-CAM all read one forward/backward pass,
Guided Grad-CAM reads the Grad-CAM pass and the guided-backprop pass. A method computes a pass through
:meth:`Context.run_pass`, which runs it at most once per request and turns the pass's own progress into
overall progress weighted by cost (the unit is one forward+backward of one image).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "INPUT_RANGE",
    "Context",
    "Method",
    "MethodInfo",
    "ParamSpec",
    "Progress",
    "to_map",
    "upsample",
]

T = TypeVar("T")
Progress = Callable[[float], None]

#: max - min of a preprocessed input (``x/255*2-1`` spans [-1, 1]); SmoothGrad's noise is a fraction of it.
INPUT_RANGE = 2.0


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter: its default and what values are allowed."""

    name: str
    default: Any
    kind: Literal["int", "float", "choice"]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""

    def normalise(self, method_id: str, value: Any) -> int | float | str:
        """``value`` in canonical form (int, float or str), or ValueError saying what is wrong."""
        where = f"{method_id}.{self.name}"
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}")
            return value
        # bool is an int subclass, and strings would sneak through float(); neither is a number here.
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"{where} must be a number; got {value!r}")
        number: int | float
        if self.kind == "int":
            if isinstance(value, float | np.floating) and not float(value).is_integer():
                raise ValueError(f"{where} must be an integer; got {value!r}")
            number = int(value)
        else:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{where} must be finite; got {value!r}")
        if (self.minimum is not None and number < self.minimum) or (
                self.maximum is not None and number > self.maximum):
            raise ValueError(f"{where} must be in [{self.minimum}, {self.maximum}]; got {value!r}")
        return number


@dataclass(frozen=True)
class MethodInfo:
    """The public description of one attribution method (what the web app lists and stores with a map).

    ``reduction`` says how the (3, 112, 112) input-space attribution becomes one (112, 112) map; ``signed``
    whether the map has meaningful negative values; ``deterministic`` whether it uses no random numbers
    (SmoothGrad does, reproducibly through its ``seed``). ``defaults`` is derived from ``params``.
    """

    id: str
    label: str
    signed: bool
    deterministic: bool
    reduction: str
    description: str
    params: tuple[ParamSpec, ...] = ()
    defaults: Mapping[str, Any] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType({p.name: p.default for p in self.params}))


@dataclass(frozen=True)
class Method:
    """A method module's whole contribution: description, cost model and computation."""

    info: MethodInfo
    #: pass key → cost (forward+backward passes of one image) for these (normalised) parameters.
    passes: Callable[[Mapping[str, Any]], Mapping[str, float]]
    #: (context, normalised parameters) → (112, 112) map.
    compute: Callable[[Context, Mapping[str, Any]], Tensor | np.ndarray]
    #: optional check across parameters (each one alone is checked by its ParamSpec); raises ValueError.
    check: Callable[[Mapping[str, Any]], None] | None = None


@dataclass
class Context:
    """Everything one explain() request shares between its methods; lives for that request only."""

    model: nn.Module  # the objective as a model: ``model(x)[:, target]`` (logits, or an (N, 1) similarity)
    layer: nn.Module  # the Grad-CAM layer inside that copy
    x: Tensor  # (1, 3, 112, 112) preprocessed input, no grad, on the explainer's device (create tensors on x.device)
    target: int
    batch_size: int  # internal batch for multi-sample methods (IG steps, SmoothGrad samples)
    inference: Callable[[], Callable[[Tensor], Tensor]]  # lazily built no-grad logits function (occlusion)
    costs: Mapping[str, float]  # every pass this request will run → its cost
    on_progress: Progress | None = None
    #: the engine's private eval-mode network (methods that read its internals: similarity_decomposition)
    network: nn.Module | None = None
    #: the :class:`app.explain.objectives.Objective` that ``model(x)[:, target]`` computes
    objective: Any = None
    #: the mode the running method computes in ("exact" or "fast", app.explain.fast), set by the engine per method
    mode: str = "exact"
    #: fast mode's measured plan and networks for this objective, built lazily: ``() -> (FastPlan, FastNetworks)``
    #: (app.explain.fast_plan); None where the engine offers none
    fast: Callable[[], tuple[Any, Any]] | None = None
    _results: dict[str, Any] = field(default_factory=dict)
    _done: float = 0.0
    _reported: float = 0.0

    @property
    def total_cost(self) -> float:
        return sum(self.costs.values()) or 1.0

    def report(self, fraction: float) -> None:
        """Overall progress, never going backwards (callers see a monotone bar)."""
        fraction = min(1.0, max(self._reported, fraction))
        self._reported = fraction
        if self.on_progress is not None:
            self.on_progress(fraction)

    def run_pass(self, key: str, compute: Callable[[Progress], T]) -> T:
        """Result of pass ``key``, computed once per request; ``compute`` gets a 0..1 progress callback."""
        if key in self._results:
            return self._results[key]
        if key not in self.costs:
            raise RuntimeError(f"pass {key!r} was not declared by any requested method's passes()")
        cost, start = self.costs[key], self._done

        def sub_progress(fraction: float) -> None:
            self.report((start + cost * min(1.0, max(0.0, fraction))) / self.total_cost)

        result = compute(sub_progress)
        self._results[key] = result
        self._done = start + cost
        self.report(self._done / self.total_cost)
        return result

    def fast_variant(self) -> tuple[Any, Any] | None:
        """``(FastPlan, FastNetworks)`` while the running method computes in fast mode, else None."""
        if self.mode == "fast" and self.fast is not None:
            return self.fast()
        return None

    def gradient_model(self, method_id: str | None = None) -> Callable[[Tensor], Tensor]:
        """What a gradient method differentiates: ``model``, or in fast mode the objective on the network the plan
        chose for ``method_id`` on this CPU (app.explain.fast_plan: float32, folded float32 or the bf16 twin)."""
        variant = self.fast_variant() if method_id is not None else None
        if variant is not None:
            plan, networks = variant
            return networks.gradient_model(plan.choice(method_id).precision)
        return self.model

    def input_with_grad(self) -> Tensor:
        """A fresh leaf copy of the input that requires grad (Captum warns if the input does not)."""
        return self.x.detach().clone().requires_grad_(True)


def upsample(layer_map: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 1, h, w) → (N, 1, H, W) bilinear, exactly as Captum's ``LayerAttribution.interpolate(..., "bilinear")``."""
    return F.interpolate(layer_map, size, mode="bilinear")


def to_map(attribution: Tensor) -> np.ndarray:
    """A (1, H, W) or (H, W) tensor → contiguous float32 numpy (H, W)."""
    if attribution.dim() == 3:
        attribution = attribution[0]
    return np.ascontiguousarray(attribution.detach().cpu().numpy(), dtype=np.float32)
