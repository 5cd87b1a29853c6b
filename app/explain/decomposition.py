"""Exact decomposition of an objective into per-location contributions on the last feature map.

Why it is exact. In eval mode an iResNet's embedding is an *affine* function of the last feature map
``F`` (C×7×7, the output of ``layer4``)::

    e = s3 ⊙ (W1 · vec(s2 ⊙ F + t2) + b1) + t3          (bn2 → flatten → dropout = identity → fc → features)

with ``s2, t2`` / ``s3, t3`` the BatchNorms' running-statistics scale and shift. So for any fixed vector
``v``::

    v · e = Σ_loc Σ_c  u[c, loc] · s2[c] · F[c, loc]  +  v · (s3 ⊙ (W1 · vec(t2) + b1) + t3),
    u = reshape(W1ᵀ (s3 ⊙ v), (C, 7, 7)),

a sum of one number per grid cell plus a constant that does not depend on the face's pixels through ``F``.
Choosing ``v``:

* dot product with another face B: ``v = e_B`` (the map on A for its match with B; swap for the map on B);
* cosine similarity: ``v = ê_B / |e_A|`` — ``|e_A|`` is one scalar of this pair, so the split stays exact;
* a class logit: ``v = head.weight[c]`` and the constant gains ``head.bias[c]`` (an exact CAM).

Where it does not hold: a model in training mode (BatchNorm uses batch statistics, dropout is active), a head
with a non-linearity between the last feature map and the embedding (an MLP with ReLU, attention pooling,
GeM pooling), an embedding averaged over test-time augmentations or an ensemble (then there is one grid per
augmented image or network, and a sum of grids over images that are not aligned cell by cell), or any
network that is not an :class:`~app.nets.iresnet.IResNet` with this tail. :func:`decompose` refuses those.

The map the engine shows spreads each cell's contribution evenly over its 16×16 pixels, so the 112×112 map
still sums exactly to ``objective − constant``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from app.explain.folded import bn_scale_shift
from app.nets.iresnet import INPUT_SIZE, IResNet

__all__ = ["Decomposition", "decompose", "direction_for", "spread"]


@dataclass(frozen=True)
class Decomposition:
    """``grid.sum() + constant == value`` (float64); ``value`` is the objective computed the ordinary way."""

    grid: np.ndarray  # (h, w) float64 contribution of each cell of the last feature map
    constant: float
    value: float
    embedding: np.ndarray  # (512,) float64, the face's embedding (from the same forward)


def _check_network(network: nn.Module) -> IResNet:
    if not isinstance(network, IResNet):
        raise ValueError(f"the exact decomposition needs an iResNet (affine bn2 → fc → features tail); "
                         f"got {type(network).__name__}")
    if network.training:
        raise ValueError("the exact decomposition holds in eval mode only (BatchNorm statistics, no dropout)")
    if not isinstance(network.bn2, nn.BatchNorm2d) or not isinstance(network.features, nn.BatchNorm1d):
        raise ValueError("the network's tail is not bn2 (BatchNorm2d) → fc → features (BatchNorm1d)")
    return network


def feature_map_and_embedding(network: IResNet, x: Tensor) -> tuple[Tensor, Tensor]:
    """(C, h, w) last feature map and (512,) embedding of one preprocessed image, from one no-grad forward."""
    captured: list[Tensor] = []
    handle = network.layer4.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        with torch.no_grad():
            _, embedding = network(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError("layer4 must run exactly once per forward")
    return captured[0][0].double(), embedding[0].double()


def decompose(network: nn.Module, x: Tensor, direction: Tensor | np.ndarray, *, bias: float = 0.0,
              value: float | None = None) -> Decomposition:
    """Split ``direction · e(x) + bias`` into per-cell contributions of ``x``'s last feature map.

    ``value``, if given, is what the split must add up to (e.g. a cosine); otherwise ``direction · e + bias``.
    """
    net = _check_network(network)
    with torch.no_grad():
        return _decompose(net, x, direction, bias, value)


def _decompose(net: IResNet, x: Tensor, direction: Tensor | np.ndarray, bias: float,
               value: float | None) -> Decomposition:
    feature, embedding = feature_map_and_embedding(net, x)
    v = torch.as_tensor(np.asarray(direction) if not isinstance(direction, Tensor) else direction.detach().cpu(),
                        dtype=torch.float64).reshape(-1).to(feature.device)
    if v.numel() != embedding.numel():
        raise ValueError(f"direction has {v.numel()} values, the embedding {embedding.numel()}")
    s2, t2 = bn_scale_shift(net.bn2)
    s3, t3 = bn_scale_shift(net.features)
    w1, b1 = net.fc.weight.double(), net.fc.bias.double()
    channels, height, width = feature.shape
    u = (w1.t() @ (s3 * v)).reshape(channels, height, width)
    grid = (u * s2.view(-1, 1, 1) * feature).sum(dim=0)
    t2_flat = t2.repeat_interleave(height * width)
    constant = float(v @ (s3 * (w1 @ t2_flat + b1) + t3)) + float(bias)
    direct = float(v @ embedding) + float(bias) if value is None else float(value)
    return Decomposition(grid=grid.cpu().numpy(), constant=constant, value=direct,
                         embedding=embedding.cpu().numpy())


def direction_for(network: nn.Module, x: Tensor, objective: object) -> tuple[np.ndarray, float, float]:
    """(direction v, bias, objective value) such that the objective of ``x`` is ``v · e(x) + bias`` exactly.

    ``objective`` is an :class:`app.explain.objectives.Objective`: a logit uses the head's row, a similarity
    ``r̂ / |e(x)|`` (the norm of this face's embedding is a constant of the pair).
    """
    net = _check_network(network)
    kind = getattr(objective, "kind", None)
    with torch.no_grad():
        logits, embedding = net(x)
    e = embedding[0].double()
    if kind == "logit":
        target = int(objective.target)  # type: ignore[attr-defined]
        row = net.head.weight[target].detach().double()
        return row.cpu().numpy(), float(net.head.bias[target].detach()), float(logits[0, target])
    if kind == "similarity":
        reference = torch.tensor(np.array(objective.reference), dtype=torch.float64,  # type: ignore[attr-defined]
                                 device=e.device)
        norm = float(e.norm())
        return (reference / norm).cpu().numpy(), 0.0, float(e @ reference) / norm
    raise ValueError(f"unknown objective {objective!r}")


def spread(grid: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(h, w) cell contributions → (size, size) float32 map, each cell's value spread evenly over its pixels."""
    h, w = grid.shape
    if size % h or size % w:
        raise ValueError(f"a {h}×{w} grid does not tile {size}×{size} pixels")
    block = np.full((size // h, size // w), 1.0 / ((size // h) * (size // w)))
    return np.kron(grid, block).astype(np.float32)
