"""A frozen, BatchNorm-folded, channels-last copy of an iResNet for no-grad inference (occlusion's network).

Why a copy of its own: occlusion evaluates hundreds of occluded images per map with no gradients, so the
BatchNorms can be folded away and the affine tail collapsed, and the incremental path of
:mod:`app.explain.occlusion` needs the blocks as plain tensors (to run them on crops). The copy is built once per
network (cached, invalidated when the network's weights change) and is a pure function of its input.

Folding: a BatchNorm that *follows* a convolution (``bn1`` after the stem conv, ``bn2``/``bn3`` after the
block convolutions, ``downsample.1``) is folded into that convolution's weight and bias, which is exact up
to rounding. The BatchNorm that *precedes* a block's first convolution (``layer*.bn1``) is kept: folding it
into the convolution would also scale the zero padding, which changes the border pixels. The affine tail
``bn2 → fc → features → head`` (dropout is the identity in eval mode) collapses into one linear map.

Devices: an :class:`InferenceForward` lives on the device of the network it was folded from and moves its
inputs there.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.nets.iresnet import INPUT_SIZE, IBasicBlock, IResNet

__all__ = ["InferenceForward", "bn_scale_shift", "inference_forward"]


# --------------------------------------------------------------------------------------------------
# the folded network


@dataclass(frozen=True)
class _Conv:
    weight: torch.Tensor  # channels-last (out, in, k, k)
    bias: torch.Tensor
    stride: int
    padding: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    def __call__(self, x: torch.Tensor, *, padding: int | None = None) -> torch.Tensor:
        pad = self.padding if padding is None else padding
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=pad)


@dataclass(frozen=True)
class _Affine:
    """An eval-mode BatchNorm2d as a per-channel scale and shift (what PyTorch's CPU kernel computes)."""

    scale: torch.Tensor  # (1, C, 1, 1)
    shift: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


@dataclass(frozen=True)
class _Block:
    bn1: _Affine
    conv1: _Conv  # conv1 with bn2 folded in
    prelu: torch.Tensor
    conv2: _Conv  # conv2 with bn3 folded in
    downsample: _Conv | None  # downsample.0 with downsample.1 folded in

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.prelu(self.conv1(self.bn1(x)), self.prelu))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 scale and shift of an eval-mode BatchNorm."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _fold_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> _Conv:
    scale, shift = bn_scale_shift(bn)
    weight = conv.weight.double() * scale[:, None, None, None]
    bias = shift if conv.bias is None else shift + conv.bias.double() * scale
    stride, padding = conv.stride[0], conv.padding
    if isinstance(padding, str) or conv.stride[0] != conv.stride[1] or padding[0] != padding[1]:
        raise ValueError("only square strides and explicit symmetric padding are supported")
    return _Conv(
        weight=weight.float().contiguous(memory_format=torch.channels_last),
        bias=bias.float().contiguous(),
        stride=int(stride),
        padding=int(padding[0]),
    )


def _affine(bn: nn.BatchNorm2d) -> _Affine:
    scale, shift = bn_scale_shift(bn)
    return _Affine(scale.float().view(1, -1, 1, 1).contiguous(), shift.float().view(1, -1, 1, 1).contiguous())


def _fold_block(block: IBasicBlock) -> _Block:
    downsample = None
    if block.downsample is not None:
        ds = block.downsample
        if not (isinstance(ds, nn.Sequential) and len(ds) == 2):
            raise ValueError("expected downsample = Sequential(conv1x1, BatchNorm2d)")
        downsample = _fold_conv(ds[0], ds[1])
    return _Block(
        bn1=_affine(block.bn1),
        conv1=_fold_conv(block.conv1, block.bn2),
        prelu=block.prelu.weight.detach().float().clone(),
        conv2=_fold_conv(block.conv2, block.bn3),
        downsample=downsample,
    )


class InferenceForward:
    """No-grad logits of a frozen copy of an :class:`IResNet`: ``forward(x) -> (N, num_classes)``.

    Built by :func:`inference_forward`; holds its own folded float32 tensors (the network it was built
    from is never touched, and later changes to that network do not reach it). Calls are pure functions
    of their input, so one instance may serve several threads. :func:`occlusion_map` recognises it and
    evaluates occlusions incrementally.
    """

    def __init__(self, network: IResNet) -> None:
        if not isinstance(network, IResNet):
            raise TypeError(f"expected an IResNet, got {type(network).__name__}")
        with torch.no_grad():
            self.stem = _fold_conv(network.conv1, network.bn1)
            self.stem_prelu = network.prelu.weight.detach().float().clone()
            blocks = [block for stage in (network.layer1, network.layer2, network.layer3, network.layer4)
                      for block in stage]
            if not all(isinstance(block, IBasicBlock) for block in blocks):
                raise ValueError("every stage must be a sequence of IBasicBlock")
            self.blocks: tuple[_Block, ...] = tuple(_fold_block(block) for block in blocks)
            # bn2 → flatten → (dropout: identity in eval) → fc → features → head, as one linear map
            scale2, shift2 = bn_scale_shift(network.bn2)
            spatial = network.fc.in_features // scale2.numel()
            s2, t2 = scale2.repeat_interleave(spatial), shift2.repeat_interleave(spatial)
            w1, b1 = network.fc.weight.double(), network.fc.bias.double()
            scale3, shift3 = bn_scale_shift(network.features)
            wh, bh = network.head.weight.double(), network.head.bias.double()
            a = wh * scale3  # head ∘ features
            self.linear_weight = (a @ w1 * s2).float().contiguous()
            self.linear_bias = (a @ (w1 @ t2 + b1) + wh @ shift3 + bh).float().contiguous()
            # the same tail without the head: the embedding (for similarity objectives, see with_similarity)
            self._embedding_weight = (scale3[:, None] * w1 * s2).float().contiguous()
            self._embedding_bias = (scale3 * (w1 @ t2 + b1) + shift3).float().contiguous()
        self.post: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.num_classes = int(network.head.out_features)
        self.input_channels = int(network.conv1.in_channels)
        self.device = self.linear_weight.device
        #: dtype of the blocks' tensors and activations (float32; fast mode's twin is bfloat16); the linear tail
        #: always runs in float32, so logit differences are not rounded to the activations' precision
        self.dtype = torch.float32

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(self.stem(x), self.stem_prelu)

    def tail(self, x: torch.Tensor, first_block: int) -> torch.Tensor:
        """Blocks ``first_block..`` and the linear tail on full (N, C, h, w) feature maps."""
        for block in self.blocks[first_block:]:
            x = block(x)
        out = F.linear(torch.flatten(x, 1).float(), self.linear_weight, self.linear_bias)
        return out if self.post is None else self.post(out)

    def with_similarity(self, unit_reference: np.ndarray) -> InferenceForward:
        """A copy whose output is ``cos(embedding, r)`` as (N, 1) instead of the logits (same folded blocks).

        ``unit_reference`` is the L2-normalised reference embedding (:class:`app.explain.objectives.Objective`).
        Occlusion on it measures the drop in similarity; the incremental path works unchanged.
        """
        from app.explain.objectives import cosine

        reference = torch.as_tensor(np.array(unit_reference), dtype=torch.float32, device=self.device)
        twin = copy.copy(self)
        twin.linear_weight, twin.linear_bias = self._embedding_weight, self._embedding_bias
        twin.post = lambda embedding: cosine(embedding, reference)
        twin.num_classes = 1
        return twin

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The same output as a call, but inside autograd (fast mode's gradient methods differentiate the bf16
        twin, app.explain.fast): the folded tensors never require grad, so only the input's gradient is taken."""
        x = x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)
        return self.tail(self.stem_forward(x), 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.input_channels, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected a (N, {self.input_channels}, {INPUT_SIZE}, {INPUT_SIZE}) batch, "
                             f"got {tuple(x.shape)}")
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)
            return self.tail(self.stem_forward(x), 0)


_Versions = tuple[tuple[int, int], ...]
_CACHE: weakref.WeakKeyDictionary[IResNet, tuple[_Versions, InferenceForward]] = weakref.WeakKeyDictionary()


def _versions(network: IResNet) -> _Versions:
    """Identity and in-place version counter of every parameter and buffer: new weights invalidate the cache."""
    return tuple((id(t), t._version) for t in (*network.parameters(), *network.buffers()))


def inference_forward(network: IResNet) -> InferenceForward:
    """An optimised no-grad logits function for ``network`` (a private, folded copy; cached per network).

    The cache is keyed by the network object (weakly) and by the in-place version counters of its
    tensors, so loading new weights into the same network builds a new copy; so does moving it to another
    device (the copy lives on the network's device).
    """
    versions = _versions(network)
    hit = _CACHE.get(network)
    if hit is not None and hit[0] == versions and hit[1].device == network.conv1.weight.device:
        return hit[1]
    forward = InferenceForward(network)
    _CACHE[network] = (versions, forward)
    return forward
