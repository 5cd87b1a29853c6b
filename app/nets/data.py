"""Read a synthetic-face data set folder (format ``gestaltlens-synth/1``) for training and evaluation.

The generator (``app.synth``) writes ``dataset.json`` (classes in class-index order, seed, counts,
detection rate) and ``manifest.jsonl`` (one image per line, with its split, label and — when the app's
real detector found the face — the path of the 112x112 aligned crop). The network is trained and tested
on those aligned crops, i.e. on exactly what the app would feed it; images the detector missed are
counted (the end-to-end rate matters) but cannot be classified.

Only the fields this reader needs are checked, and checked strictly: a manifest whose ``label`` and
``label_index`` disagree, or an aligned crop that is not 112x112 RGB, would teach the network nonsense.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.nets.card import HpoTerm, Label
from app.nets.iresnet import INPUT_SIZE

__all__ = ["SYNTH_FORMAT", "DatasetError", "DatasetInfo", "Split", "load_split", "read_dataset_info", "read_manifest"]

SYNTH_FORMAT = "gestaltlens-synth/1"


class DatasetError(ValueError):
    """A data set folder that cannot be trained on, and why."""


@dataclass(frozen=True)
class DatasetInfo:
    folder: Path
    format: str
    seed: Any
    labels: tuple[Label, ...]
    detection_rate: Any
    counts: Any
    raw: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Split:
    """The usable (detected, aligned) images of one split, in manifest order."""

    name: str
    images: np.ndarray  # (N, 112, 112, 3) uint8 RGB aligned crops
    targets: np.ndarray  # (N,) int64 class indices
    image_ids: list[str]
    subject_ids: list[str] | None
    n_undetected: int  # images of this split without an aligned crop

    def __len__(self) -> int:
        return len(self.image_ids)


def _label(index: int, item: Any) -> Label:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(item.get("name"), str):
        raise DatasetError(f"dataset.json class {index} needs string 'id' and 'name'")
    omim = item.get("omim")
    hpo = item.get("hpo") or []
    try:
        terms = tuple(HpoTerm(str(t["id"]), str(t["name"])) for t in hpo)
    except (TypeError, KeyError) as exc:
        raise DatasetError(f"dataset.json class {item['id']!r} has malformed 'hpo' terms") from exc
    return Label(id=item["id"], name=item["name"], omim=str(omim) if omim is not None else None, hpo=terms)


def read_dataset_info(data_dir: Path) -> DatasetInfo:
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{data_dir} is not a data set folder: dataset.json is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"dataset.json is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != SYNTH_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise DatasetError(f"dataset.json format is {found!r}, expected {SYNTH_FORMAT!r}")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes:
        raise DatasetError("dataset.json has no classes")
    labels = tuple(_label(i, c) for i, c in enumerate(classes))
    if len({label.id for label in labels}) != len(labels):
        raise DatasetError("dataset.json lists a class id twice")
    return DatasetInfo(folder=Path(data_dir), format=raw["format"], seed=raw.get("seed"), labels=labels,
                       detection_rate=raw.get("detection_rate"), counts=raw.get("counts"), raw=raw)


def read_manifest(data_dir: Path) -> list[dict[str, Any]]:
    path = Path(data_dir) / "manifest.jsonl"
    if not path.is_file():
        raise DatasetError(f"{data_dir}: manifest.jsonl is missing")
    entries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"manifest.jsonl line {number} is not JSON: {exc}") from exc
            if not isinstance(entry, dict):
                raise DatasetError(f"manifest.jsonl line {number} is not an object")
            entries.append(entry)
    return entries


def _read_crop(path: Path, image_id: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"aligned crop of image {image_id!r} is missing: {path}")
    with Image.open(path) as image:
        crop = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if crop.shape != (INPUT_SIZE, INPUT_SIZE, 3):
        raise DatasetError(f"aligned crop of image {image_id!r} is {crop.shape[1]}x{crop.shape[0]}, "
                           f"expected {INPUT_SIZE}x{INPUT_SIZE}")
    return crop


def load_split(info: DatasetInfo, manifest: list[dict[str, Any]], split: str) -> Split:
    """Load the detected, aligned images of ``split`` ("train" or "test") with their class indices."""
    images, targets, ids, subjects = [], [], [], []
    undetected = 0
    for entry in manifest:
        if entry.get("split") != split:
            continue
        image_id, label, index = entry.get("id"), entry.get("label"), entry.get("label_index")
        if not isinstance(image_id, str) or not isinstance(index, int) or not 0 <= index < len(info.labels):
            raise DatasetError(f"manifest entry {image_id!r} has an invalid id or label_index {index!r}")
        if info.labels[index].id != label:
            raise DatasetError(f"manifest entry {image_id!r} says label {label!r} but label_index {index} is "
                               f"{info.labels[index].id!r} in dataset.json")
        if not entry.get("detected") or not entry.get("aligned"):
            undetected += 1
            continue
        images.append(_read_crop(info.folder / entry["aligned"], image_id))
        targets.append(index)
        ids.append(image_id)
        subjects.append(entry.get("subject_id"))
    has_subjects = bool(subjects) and all(isinstance(s, str) for s in subjects)
    return Split(
        name=split,
        images=np.stack(images) if images else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8),
        targets=np.asarray(targets, dtype=np.int64),
        image_ids=ids,
        subject_ids=subjects if has_subjects else None,
        n_undetected=undetected,
    )
