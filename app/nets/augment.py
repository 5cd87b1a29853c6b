"""Training-time augmentation for aligned face crops, in plain torch (torchvision is not a dependency).

Aligned crops already have eyes, nose and mouth at fixed template positions, and the classifier may rely
on those positions and on proportions, so geometric jitter is kept to what residual alignment error looks
like: a few pixels of shift, a few degrees of roll, a few percent of scale — never a shear or anisotropic
scale, which would change facial proportions (the very signal for several syndromes). Photometric jitter
(brightness, contrast, per-channel colour gain) imitates camera and lighting differences.

Horizontal flip is on only when every class's features are bilateral: a flip turns a left-sided feature
into a right-sided one and would teach the network that laterality does not matter. The synthetic
classes are all symmetric, so the trainer enables it and records the choice on the model card; the
ArcFace template itself is symmetric to within 0.3 px about x = 56, so a flipped crop is still aligned.

All randomness comes from the ``torch.Generator`` passed in, so a training run is reproducible by seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment"]


@dataclass(frozen=True)
class AugmentConfig:
    max_shift_px: float = 3.0
    max_rotation_deg: float = 5.0
    max_scale: float = 0.05  # relative, symmetric: scale in [1 - s, 1 + s]
    brightness: float = 0.08  # additive, in [0, 1] intensity units
    contrast: float = 0.15  # relative
    colour: float = 0.05  # relative per-channel gain
    hflip: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _uniform(n: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2.0 - 1.0) * bound


def augment(batch: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Randomly jitter a (N, 3, H, W) batch in [-1, 1]; returns a new tensor in [-1, 1]."""
    n, _, height, width = batch.shape
    angle = _uniform(n, math.radians(config.max_rotation_deg), generator)
    scale = 1.0 + _uniform(n, config.max_scale, generator)
    shift_x = _uniform(n, config.max_shift_px, generator) * 2.0 / width  # normalised grid units
    shift_y = _uniform(n, config.max_shift_px, generator) * 2.0 / height
    flip = torch.rand(n, generator=generator) < 0.5 if config.hflip else torch.zeros(n, dtype=torch.bool)
    sign = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # output → input sampling map: rotation/scale about the centre, then a horizontal mirror where flipped
    theta = torch.stack([
        torch.stack([cos * sign, -sin, shift_x], dim=1),
        torch.stack([sin * sign, cos, shift_y], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)

    unit = (out + 1.0) / 2.0
    gain = 1.0 + _uniform(n * 3, config.colour, generator).view(n, 3, 1, 1)
    contrast = 1.0 + _uniform(n, config.contrast, generator).view(n, 1, 1, 1)
    brightness = _uniform(n, config.brightness, generator).view(n, 1, 1, 1)
    unit = unit * gain
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    unit = ((unit - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
    return unit * 2.0 - 1.0
