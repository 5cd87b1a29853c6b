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

What a fast method computes is chosen **per CPU and network from a measurement** (:mod:`app.explain.fast_plan`):
at first use the engine times each candidate on two probe faces and keeps the fastest that correlates >= 0.995 with
the exact map (a margin over the 0.99 bar), caches the choice per machine + network, and never runs anything slower
than exact. The candidates (see the README's Speed section for the figures, the machines and their load):

* **precision**: the engine's float32 module, the BatchNorm-folded float32 copy (same function up to rounding,
  fewer operations forward and backward) or a **bf16 twin of the folded network** (:func:`bf16_inference`: weights
  converted once, linear tail in float32; 6-8x the float32 conv rate on CPUs with AMX, but 6-17x *slower* than
  float32 on CPUs that emulate bf16, such as an AVX2-only AMD EPYC: that, not a rebuild, is why the fixed bf16 fast
  mode cost seven times exact in a cohort there);
* **less work**: integrated gradients with the fewest Gauss-Legendre steps that hold the bar; SmoothGrad with a
  prefix of exact's noisy samples (one batch when they fit); occlusion **coarse to fine**
  (:func:`app.explain.coarse_to_fine.coarse_to_fine`): every other window position evaluated, the rest estimated by
  the network's tail linearised at the clean image (one backward pass and the cheap cropped front of each window)
  plus the interpolated error of that estimate, refining the windows where it is least certain.

Candidates measured and not used: ``torch.autocast`` around the module (re-converts every weight per call: 1.2-1.4x
the twin's time); **Krypton-style approximate incremental occlusion** (Nakandala et al., SIGMOD 2019,
projective-field thresholding, :func:`app.explain.occlusion.occlusion_map` ``projective_cap``): the iResNet tail is a
linear map over the flattened 7x7 grid, so activations an occluder moves far away still weigh on the logit, and the
cap is below the bar wherever it saves time (iResNet-50 tau = 0.6: 1.6x at corr 0.84); **torch.compile** (Inductor):
0.92-0.97x eager after a cold compile of tens of seconds per shape.

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
        FastVariant("integrated_gradients", "the fewest Gauss-Legendre steps that hold the bar, on the network "
                    "measured fastest here (float32, folded float32 or the bf16 twin)", MIN_FAST_CORR),
        FastVariant("smoothgrad", "a prefix of exact's noisy samples (the fewest that hold the bar), on the "
                    "network measured fastest here", MIN_FAST_CORR),
        FastVariant("occlusion", "coarse to fine with a linearised-tail control variate, on the folded float32 copy "
                    "or the bf16 twin, whichever is faster here", MIN_FAST_CORR),
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
