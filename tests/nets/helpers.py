"""Builders shared by the network tests: random-but-sane weights, model folders, a tiny data set folder."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from app.nets.card import ARCFACE_TEMPLATE
from app.nets.iresnet import IResNet

LABEL_IDS = ("syn_a", "syn_b", "syn_c", "syn_d", "syn_e")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_arcface_keys(blocks: tuple[int, int, int, int]) -> list[str]:
    """arcface_torch's iresnet state-dict keys, written out from its layout (not from our module)."""
    keys = ["conv1.weight", *(f"bn1.{k}" for k in BN), "prelu.weight"]
    for stage, count in enumerate(blocks, start=1):
        for i in range(count):
            p = f"layer{stage}.{i}."
            keys += [*(p + f"bn1.{k}" for k in BN), p + "conv1.weight", *(p + f"bn2.{k}" for k in BN),
                     p + "prelu.weight", p + "conv2.weight", *(p + f"bn3.{k}" for k in BN)]
            if i == 0:
                keys += [p + "downsample.0.weight", *(p + f"downsample.1.{k}" for k in BN)]
    keys += [*(f"bn2.{k}" for k in BN), "fc.weight", "fc.bias", *(f"features.{k}" for k in BN)]
    return keys


def randomise_(network: IResNet, seed: int) -> IResNet:
    """Give every parameter and buffer a distinct random value, keeping activations finite.

    arcface_torch's own initialisation (N(0, 0.1) convs, identity BatchNorm statistics) overflows through
    24+ residual blocks in eval mode, and identical BN tensors would hide a key mix-up; this does neither.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1)
            elif name.endswith("prelu.weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.3)
            elif tensor.dim() == 1:  # BatchNorm scales (features.weight stays fixed at 1, as in arcface_torch)
                if not name.startswith("features."):
                    tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.5 + 0.5)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=g) * (0.5 / fan_in**0.5))
    return network.eval()


def responsive(network: IResNet, seed: int) -> IResNet:
    """``randomise_`` weights with convolutions x3: ``randomise_`` alone leaves the logits nearly constant, and a
    map of a network that does not react to its input tests nothing."""
    randomise_(network, seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(3.0)
    return network


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """torch on one thread while inside (timings and float results that do not depend on the thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def labels_json(n: int) -> list[dict[str, Any]]:
    return [{"id": LABEL_IDS[i], "name": f"Synthetic syndrome {i}", "omim": None if i else "100000",
             "hpo": [{"id": "HP:0000316", "name": "Hypertelorism"}] if i == 0 else []} for i in range(n)]


def card_json(model_id: str, arch: str, width: float, num_classes: int, **overrides: Any) -> dict[str, Any]:
    card = {
        "id": model_id,
        "version": "0.1.0",
        "architecture": {"name": arch, "width": width, "num_classes": num_classes},
        "input": {"size": 112, "channels": "RGB", "normalisation": "x/255*2-1"},
        "alignment_template": [list(p) for p in ARCFACE_TEMPLATE],
        "labels": "labels.json",
        "weights": "weights.pt",
        "gallery": None,
        "gradcam_layer": "layer4",
        "intended_use": "tests only",
        "training_data": "none",
        "metrics": {},
        "licence": "MIT",
    }
    card.update(overrides)
    return card


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def write_folder(folder: Path, network: IResNet, *, n_labels: int | None = None, **card: Any) -> Path:
    """A model folder with a merged weights.pt (head included) for ``network``."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = network.spec
    write_json(folder / "model.json", card_json(folder.name, spec.name, spec.width, spec.num_classes, **card))
    write_json(folder / "labels.json", labels_json(n_labels or spec.num_classes))
    torch.save(network.state_dict(), folder / "weights.pt")
    return folder


def crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


# --- a tiny data set folder in the generator's fixed format (a fixture of the format, not of faces) ---

_COLOURS = ((220, 60, 60), (60, 200, 80), (70, 90, 230))


def _shape_image(class_index: int, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(90, 140, (112, 112, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    cx, cy = 56 + rng.integers(-6, 7), 60 + rng.integers(-6, 7)
    r = int(rng.integers(18, 28))
    colour = tuple(int(c) for c in np.clip(np.array(_COLOURS[class_index]) + rng.integers(-20, 21, 3), 0, 255))
    if class_index == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif class_index == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def write_synth_dataset(folder: Path, *, train_per_class: int = 10, test_per_class: int = 4, seed: int = 0) -> Path:
    """Three classes of coloured shapes as 112x112 'aligned' crops; one undetected image per split."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "aligned", "aligned_masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    classes = [{"id": f"syn_{k}", "name": f"Shape syndrome {k}", "omim": None,
                "hpo": [{"id": "HP:0000316", "name": "Hypertelorism"}], "features": ["hypertelorism"],
                "regions": ["eyes"], "description": "bilateral test class"} for k in "abc"]
    entries = []
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for c in range(len(classes)):
            for i in range(per_class):
                image_id = f"{split}_{c}_{i:03d}"
                image = _shape_image(c, rng)
                image.save(folder / "images" / f"{image_id}.jpg", quality=90)
                Image.new("L", (112, 112)).save(folder / "masks" / f"{image_id}.png")
                detected = not (c == 1 and i == 0)  # one face per split the detector "missed"
                if detected:
                    image.save(folder / "aligned" / f"{image_id}.png")
                    Image.new("L", (112, 112)).save(folder / "aligned_masks" / f"{image_id}.png")
                entries.append({
                    "id": image_id, "split": split, "label": classes[c]["id"], "label_index": c,
                    "severity": 0.5, "features": ["hypertelorism"], "shortcut": False,
                    "image": f"images/{image_id}.jpg", "mask": f"masks/{image_id}.png",
                    "landmarks": [list(p) for p in ARCFACE_TEMPLATE], "detected": detected,
                    "aligned": f"aligned/{image_id}.png" if detected else None,
                    "aligned_mask": f"aligned_masks/{image_id}.png" if detected else None,
                    "landmarks_aligned": [list(p) for p in ARCFACE_TEMPLATE] if detected else None,
                    "align_matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] if detected else None,
                })
    write_json(folder / "dataset.json", {
        "format": "gestaltlens-synth/1", "seed": seed, "classes": classes,
        "counts": {"train": train_per_class * 3, "test": test_per_class * 3},
        "detection_rate": 1 - 2 / (3 * (train_per_class + test_per_class)),
    })
    with (folder / "manifest.jsonl").open("w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")
    return folder
