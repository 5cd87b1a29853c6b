"""The two networks the explanation benches run on, shared by bench_explain.py and gpu_check_explain.py.

Imports only ``app.nets`` (not ``app.settings``), so the GPU check runs on a machine without the web stack.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from app.nets import iresnet50, iresnet100, load_model
from app.nets.iresnet import IResNet

ROOT = Path(__file__).resolve().parents[1]


def random_iresnet50(seed: int = 0, depth: int = 50) -> IResNet:
    """iResNet-50 (or -100) with ``randomise_`` weights (tests.nets.helpers) and convolutions x2 (responsive logits)."""
    from tests.nets.helpers import randomise_

    network = randomise_((iresnet50 if depth == 50 else iresnet100)(num_classes=9), seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(2.0)
    return network.eval()


def load_network(name: str) -> IResNet:
    if name == "demo":
        return load_model(ROOT / "models", "demo").network.eval()
    if name == "iresnet50":
        return random_iresnet50()
    if name == "iresnet100":
        return random_iresnet50(depth=100)
    raise SystemExit(f"unknown model {name!r}; known: demo, iresnet50, iresnet100")
