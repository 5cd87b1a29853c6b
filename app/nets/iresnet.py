"""The iResNet family (ArcFace / GestaltMatcher-Arc backbones) with a syndrome classifier head.

Layout and parameter names follow insightface's ``arcface_torch/backbones/iresnet.py`` exactly, so a
backbone state dict saved by arcface_torch (and GestaltMatcher-Arc checkpoints re-keyed to it) loads
without conversion:

* stem ``conv1`` (3x3, stride 1, no bias) → ``bn1`` → ``prelu``;
* ``layer1..layer4`` of :class:`IBasicBlock` (stride 2 each, applied in the block's *second* conv, so the
  first conv of ``layer1.0`` runs at full 112x112 resolution, as in arcface_torch); the first block of
  every stage has ``downsample`` = ``Sequential(conv1x1 (stride 2, no bias), BatchNorm2d)``, keys
  ``downsample.0`` / ``downsample.1``;
* ``bn2`` (BatchNorm2d) → flatten → ``dropout`` → ``fc`` Linear(512·7·7 → 512) → ``features``
  BatchNorm1d(512) whose affine weight is fixed at 1.0 and not trained (it is still a parameter, so it
  is in the state dict as ``features.weight``, as arcface_torch saves it).

Every BatchNorm uses eps=1e-5 and PyTorch's default momentum 0.1 (arcface_torch passes only eps), and
every PReLU has one slope per channel. Convolutions are initialised N(0, 0.1) and BatchNorms to
weight 1 / bias 0, again as arcface_torch does.

Two deliberate differences that do not change any key or any number the network computes:

* the residual sum and the dropout are **not in-place** (arcface_torch writes ``out += identity`` and
  ``Dropout(inplace=True)``). In-place writes into a module's output break autograd hooks that
  explanation methods (Captum's full backward hooks, Grad-CAM) put on those modules.
* every activation and normalisation is its own module instance, used exactly once per forward pass:
  attribution rules that key on modules (DeepLift, Guided Backprop) misbehave on shared modules.

The head is a separate module ``head`` = Linear(512, num_classes) applied to the 512-d ``features``
output (GestaltMatcher-Arc puts its classifier on the same representation), so a merged state dict is
the arcface_torch backbone keys plus ``head.weight`` / ``head.bias``. ``forward`` returns
``(logits, embedding)``. A ``width`` multiplier scales the four stage widths (0.25 → 16/32/64/128
channels, stem 16) for a small demo network; the embedding stays 512-d.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "BN_EPS",
    "EMBEDDING_DIM",
    "INPUT_SIZE",
    "ArchitectureSpec",
    "IBasicBlock",
    "IResNet",
    "build_network",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
]

#: Size of the face embedding (the ``features`` output) for every width.
EMBEDDING_DIM = 512
#: Side of the aligned crop the network takes; the ``fc`` layer assumes 7x7 after four stride-2 stages.
INPUT_SIZE = 112
#: BatchNorm epsilon used throughout arcface_torch's iResNet.
BN_EPS = 1e-5
_FINAL_SPATIAL = INPUT_SIZE // 16  # 7
_BASE_CHANNELS = (64, 128, 256, 512)

#: Architecture registry: name → blocks per stage (arcface_torch's iresnet18/34/50/100).
ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class IBasicBlock(nn.Module):
    """bn1 → conv1 3x3 → bn2 → prelu → conv2 3x3 (stride) → bn3, plus the (downsampled) input."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = _bn2d(inplanes)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = _bn2d(planes)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = _bn2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity  # not in-place: keeps autograd hooks on bn3 valid


@dataclass(frozen=True)
class ArchitectureSpec:
    """What a network was built as; the model card's ``architecture`` section mirrors it."""

    name: str
    num_classes: int
    width: float = 1.0
    dropout: float = 0.0


class IResNet(nn.Module):
    """iResNet backbone (arcface_torch key names) + ``head``; ``forward(x) -> (logits, embedding)``."""

    def __init__(
        self,
        layers: Sequence[int],
        *,
        num_classes: int,
        width: float = 1.0,
        dropout: float = 0.0,
        name: str = "iresnet",
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {list(layers)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if not 0.0 < width <= 4.0:
            raise ValueError(f"width must be in (0, 4], got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.spec = ArchitectureSpec(name=name, num_classes=num_classes, width=float(width), dropout=float(dropout))
        channels = [max(1, round(c * width)) for c in _BASE_CHANNELS]
        self.channels: tuple[int, ...] = tuple(channels)

        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _bn2d(channels[0])
        self.prelu = nn.PReLU(channels[0])
        inplanes = channels[0]
        stages = []
        for planes, blocks in zip(channels, layers, strict=True):
            stages.append(self._make_stage(inplanes, planes, blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = _bn2d(channels[3])
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(channels[3] * _FINAL_SPATIAL * _FINAL_SPATIAL, EMBEDDING_DIM)
        self.features = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)
        self.head = nn.Linear(EMBEDDING_DIM, num_classes)
        self._init_like_arcface_torch()

    @staticmethod
    def _make_stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False),
            _bn2d(planes),
        )
        first = IBasicBlock(inplanes, planes, stride=2, downsample=downsample)
        return nn.Sequential(first, *(IBasicBlock(planes, planes) for _ in range(blocks - 1)))

    def _init_like_arcface_torch(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # arcface_torch fixes the embedding BatchNorm's scale: the embedding's norm is learnt by fc alone.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d ``features`` output for a (N, 3, 112, 112) batch normalised to [-1, 1]."""
        if x.dim() != 4 or x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected a (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) batch, got {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(x)
        return self.head(embedding), embedding


def build_network(name: str, *, num_classes: int, width: float = 1.0, dropout: float = 0.0) -> IResNet:
    """Build a registered architecture by name; ``ValueError`` names the known ones when it is unknown."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return IResNet(ARCHITECTURES[name], num_classes=num_classes, width=width, dropout=dropout, name=name)


def iresnet18(num_classes: int, width: float = 1.0, dropout: float = 0.0) -> IResNet:
    """arcface_torch's iResNet-18 (2/2/2/2 blocks); with width 0.25 it is the small demo network."""
    return build_network("iresnet18", num_classes=num_classes, width=width, dropout=dropout)


def iresnet34(num_classes: int, width: float = 1.0, dropout: float = 0.0) -> IResNet:
    """arcface_torch's iResNet-34 (3/4/6/3 blocks)."""
    return build_network("iresnet34", num_classes=num_classes, width=width, dropout=dropout)


def iresnet50(num_classes: int, width: float = 1.0, dropout: float = 0.0) -> IResNet:
    """arcface_torch's iResNet-50 (3/4/14/3 blocks), a GestaltMatcher-Arc backbone."""
    return build_network("iresnet50", num_classes=num_classes, width=width, dropout=dropout)


def iresnet100(num_classes: int, width: float = 1.0, dropout: float = 0.0) -> IResNet:
    """arcface_torch's iResNet-100 (3/13/30/3 blocks), GestaltMatcher-Arc's main backbone."""
    return build_network("iresnet100", num_classes=num_classes, width=width, dropout=dropout)
