"""Compute modes of the explanation engine: ``exact`` (the default) and the opt-in ``fast`` mode.

Why two modes, and why the fast one is narrow:

* **exact** maps are the numbers naive Captum computes (PReLU rules where stock Captum is wrong), up to float
  rounding: the bench (``bench/bench_explain.py``) measures Pearson correlation ≥ 0.999 against Captum for every
  method. This is what clinicians rate and what the evaluation scorecard reads unless told otherwise.
* **fast** trades agreement for time on CPU workers, but only for methods where the trade was *measured* to be
  safe: a method is offered in fast mode only if, in the bench, its fast map correlates ≥ :data:`MIN_FAST_CORR`
  with its exact map on every benchmark network (the demo model, iResNet-50, iResNet-100). Every other method runs
  exact even in a fast request, and :func:`effective_mode` says so per map, so a stored map or figure always carries
  the mode it was really computed in and no one mistakes one for the other.

Candidates measured (see the README's Speed section for the figures, the machine and its load):

* **bf16 for the many-pass gradient methods** (integrated gradients, SmoothGrad): oneDNN runs convolutions in
  bfloat16 on CPUs with AVX512-BF16 / AMX (and CUDA on GPUs); accumulation stays float32 inside each convolution,
  each layer's output is rounded to an 8-bit mantissa, and the rounding noise averages out over the steps or
  samples (corr 0.998-0.9998 with the exact maps). Measured two ways: ``torch.autocast`` around the engine's
  network copy, and differentiating a bf16 *twin of the folded network* (:func:`bf16_inference`: BatchNorms
  folded, weights converted once, linear tail in float32). Same agreement; the twin is 1.2-1.4x faster
  (autocast re-converts every weight on every call and keeps the BatchNorms), so fast mode uses the twin.
  Single-pass methods gain little and are not offered.
* **bf16 incremental occlusion**: autocast around the folded inference copy converts every weight on every call
  (slower than float32), so fast occlusion runs on the same bf16 twin, whose float32 tail keeps the logit
  differences from being rounded to bf16.
* **Krypton-style approximate incremental occlusion** (Nakandala et al., SIGMOD 2019, projective-field
  thresholding): every residual block runs on crops at most a fraction τ of its feature map wide
  (:func:`app.explain.occlusion.occlusion_map` ``projective_cap``). The iResNet tail is a *linear map over the
  flattened 7×7 grid*, not a global pooling, so the activations an occluder moves far from it still weigh on the
  logit: on the demo model τ = 0.9 keeps corr 0.999 but saves nothing, τ = 0.6 saves 1.2-1.8× at corr 0.96; on
  iResNet-50 τ = 0.6 saves 1.6× at corr 0.84. It is below the bar wherever it pays, so it is measured by the bench
  and not offered.
* **torch.compile** (Inductor on CPU) of the engine's forward+backward: measured by the bench, it brings nothing
  here (0.92-0.97x eager on the demo model, iResNet-50 and -100, after a cold compile of tens of seconds per input
  shape that needs a C++ compiler on every worker): oneDNN already runs the convolutions, which are nearly all of
  the work. Not used.

Why exact mode cannot simply be made faster instead: it must do naive Captum's float32 arithmetic, and on a CPU
that arithmetic is the bound. The bench's roofline table counts each map's floating-point operations and divides by
the float32 peak of the CPU's own convolution kernels: on 2 cores the exact iResNet-50 panel runs at ~80 % of that
peak, and even at 100 % it would be only ~3.1x naive. bf16 has 5-8x the peak on CPUs with AMX, which is the
headroom fast mode uses, and why it must be labelled.
The ML core stays free of the web layer: callers pass a mode string and store :func:`effective_mode`'s answer.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from app.explain.folded import InferenceForward, _Affine, _Block, _Conv

__all__ = ["EXACT", "FAST", "FAST_VARIANTS", "MIN_FAST_CORR", "MODES", "FastVariant", "check_mode",
           "effective_mode", "fast_context", "modes_for"]

EXACT = "exact"
FAST = "fast"
MODES: tuple[str, ...] = (EXACT, FAST)

#: A method is offered in fast mode only if its fast map correlates at least this much with its exact map.
MIN_FAST_CORR = 0.99


@dataclass(frozen=True)
class FastVariant:
    """How a method is computed in fast mode, and the agreement with its exact map the tests hold it to."""

    method: str
    technique: str
    #: the stated agreement: Pearson correlation with the exact map on the demo model (tests check it)
    min_corr: float


#: The methods offered in fast mode (chosen from the bench's measurements; see the module docstring).
FAST_VARIANTS: dict[str, FastVariant] = {
    variant.method: variant
    for variant in (
        FastVariant("integrated_gradients", "every step's forward and backward on a bfloat16 twin of the folded "
                    "network (float32 tail)", MIN_FAST_CORR),
        FastVariant("smoothgrad", "every noisy sample's forward and backward on a bfloat16 twin of the folded "
                    "network (float32 tail)", MIN_FAST_CORR),
        FastVariant("occlusion", "incremental occlusion on a bfloat16 twin of the folded network (float32 tail)",
                    MIN_FAST_CORR),
    )
}


def check_mode(mode: object) -> str:
    """``mode`` if it is ``"exact"`` or ``"fast"``; ValueError otherwise (a typo must not run the wrong mode)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def effective_mode(method_id: str, mode: str) -> str:
    """The mode ``method_id``'s map is really computed in when ``mode`` is asked for (fast only if offered)."""
    return FAST if check_mode(mode) == FAST and method_id in FAST_VARIANTS else EXACT


def modes_for(methods: Sequence[str], mode: str) -> dict[str, str]:
    """:func:`effective_mode` for each of ``methods``: what to store with each map."""
    return {method_id: effective_mode(method_id, mode) for method_id in methods}


_BF16_TWINS: weakref.WeakKeyDictionary[InferenceForward, InferenceForward] = weakref.WeakKeyDictionary()


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last) if t.dim() == 4 else \
        t.to(torch.bfloat16)


def _bf16_conv(conv: _Conv) -> _Conv:
    return replace(conv, weight=_bf16(conv.weight), bias=_bf16(conv.bias))


def _bf16_block(block: _Block) -> _Block:
    return _Block(bn1=_Affine(_bf16(block.bn1.scale), _bf16(block.bn1.shift)), conv1=_bf16_conv(block.conv1),
                  prelu=_bf16(block.prelu), conv2=_bf16_conv(block.conv2),
                  downsample=None if block.downsample is None else _bf16_conv(block.downsample))


def bf16_inference(forward: InferenceForward) -> InferenceForward:
    """A bfloat16 twin of a folded inference copy (cached per copy): the stem and the blocks run in bf16, the
    linear tail (and so every logit difference occlusion takes) in float32. Weights are converted once; under
    autocast they would be converted again on every call, which costs more than bf16 saves. Fast IG and
    SmoothGrad differentiate it (:meth:`InferenceForward.differentiable`): BatchNorms folded away, so the
    backward pass has fewer, all-bf16 operations (1.2-1.4x autocast's speed, same agreement; the bench)."""
    twin = _BF16_TWINS.get(forward)
    if twin is None:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: autograd may save them (fast IG)
            twin = _convert(forward)
        _BF16_TWINS[forward] = twin
    return twin


def _convert(forward: InferenceForward) -> InferenceForward:
    twin = copy.copy(forward)
    twin.stem = _bf16_conv(forward.stem)
    twin.stem_prelu = _bf16(forward.stem_prelu)
    twin.blocks = tuple(_bf16_block(block) for block in forward.blocks)
    twin.dtype = torch.bfloat16
    return twin


@contextlib.contextmanager
def fast_context(method_id: str, mode: str, device: torch.device) -> Iterator[str]:
    """Run one method's computation in its effective mode; yields that mode.

    Autocast is explicitly *disabled* either way: the fast variants switch to the bf16 twin themselves, and an
    exact map must stay exact (and the twin's float32 tail float32) even if a caller enabled autocast around
    the engine.
    """
    effective = effective_mode(method_id, mode)
    device_type = "cuda" if device.type == "cuda" else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        yield effective
