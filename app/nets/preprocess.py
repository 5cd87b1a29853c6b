"""Turn aligned RGB crops into the tensor the iResNet family expects.

ArcFace-family networks (and GestaltMatcher-Arc, which fine-tunes them) were trained on RGB crops scaled
as ``(x / 255 - 0.5) / 0.5``, i.e. into [-1, 1]. Feeding BGR (OpenCV's default order) or [0, 1] inputs
does not fail — it silently degrades every score — so this is the one place the conversion happens and
the input is checked strictly: uint8, RGB, 112x112.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from app.nets.iresnet import INPUT_SIZE

__all__ = ["NORMALISATION", "preprocess"]

#: The model card's name for this normalisation (``input.normalisation`` in model.json).
NORMALISATION = "x/255*2-1"


def _as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(images, np.ndarray):
        batch = images[None] if images.ndim == 3 else images
    else:
        if len(images) == 0:
            raise ValueError("no images to preprocess")
        batch = np.stack([np.asarray(image) for image in images])
    if batch.dtype != np.uint8:
        raise ValueError(f"aligned crops must be uint8 RGB, got dtype {batch.dtype}")
    if batch.ndim != 4 or batch.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"aligned crops must be ({INPUT_SIZE}, {INPUT_SIZE}, 3) RGB, got {tuple(batch.shape)}")
    return batch


def preprocess(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """(112,112,3) or (N,112,112,3) uint8 RGB (or a list of crops) → float32 (N,3,112,112) in [-1, 1]."""
    batch = _as_batch(images)
    tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(torch.float32)
    # contiguous NCHW: permute would otherwise hand the convolutions a channels-last layout
    return ((tensor / 255.0 - 0.5) / 0.5).contiguous()
