"""The deterministic synthetic benchmark set: aligned faces with ground-truth masks of their feature.

Why synthetic: no public data set says which pixels of a face carry a syndrome's features; our generator
does (``app.synth``). Every benchmark face is ``generate_one(seed, class, index, severity=...)`` run through
the app's real detection and alignment (exactly what an upload goes through), with the generator's mask
warped by the same alignment matrix. So the set is fixed by (seed, faces per class, severity, classes) and
any machine rebuilds it byte for byte; the scorecard stores that spec beside its numbers.

Faces whose detection fails, or whose mask is empty after alignment, are left out and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["BenchmarkFace", "BenchmarkSet", "BenchmarkSpec", "build_benchmark", "load_dataset_split"]

#: Seed of the benchmark set: far from the training data's seed 0, so benchmark faces are new people.
BENCHMARK_SEED = 1000


@dataclass(frozen=True)
class BenchmarkSpec:
    """What fixes a benchmark set. Severity 1.0: the feature fully expressed, so the mask is the clear truth."""

    seed: int = BENCHMARK_SEED
    per_class: int = 2
    severity: float = 1.0
    classes: tuple[str, ...] = ()  # empty: every syndrome (not "unaffected", which has no mask)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        return data


@dataclass(frozen=True, eq=False)
class BenchmarkFace:
    """One aligned face: ``crop`` uint8 (112, 112, 3) RGB, ``mask`` bool (112, 112) of the changed pixels."""

    image_id: str
    label: str
    crop: np.ndarray
    mask: np.ndarray
    severity: float
    shortcut: bool = False


@dataclass(frozen=True, eq=False)
class BenchmarkSet:
    spec: dict[str, object]
    faces: list[BenchmarkFace]
    skipped: list[dict[str, str]] = field(default_factory=list)  # image id and why


def _syndromes(classes: Sequence[str]) -> list[str]:
    from app.synth.classes import CLASSES, get_class

    if classes:
        return [get_class(c).id for c in classes]
    return [c.id for c in CLASSES if c.features]


def build_benchmark(spec: BenchmarkSpec = BenchmarkSpec(),
                    progress: Callable[[int, int], None] | None = None) -> BenchmarkSet:
    """Generate, detect, align and warp the masks of the benchmark faces (about 0.3 s a face on 2 cores)."""
    import cv2

    from app.synth.generate import generate_one, image_id
    from app.vision.align import TEMPLATE_SIZE
    from app.vision.detect import FaceDetector
    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    if spec.per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {spec.per_class}")
    detector = FaceDetector()
    tasks = [(c, i) for c in _syndromes(spec.classes) for i in range(spec.per_class)]
    faces, skipped = [], []
    for n, (class_id, index) in enumerate(tasks):
        face = generate_one(spec.seed, class_id, index, severity=spec.severity)
        stem = image_id(class_id, index)
        try:
            processed = process_photo(face.jpeg, detector=detector)
        except IntakeError as error:
            skipped.append({"image_id": stem, "reason": error.code})
        else:
            warped = cv2.warpAffine(face.mask, processed.aligned.matrix, (TEMPLATE_SIZE, TEMPLATE_SIZE),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            mask = warped >= 128
            if not mask.any():
                skipped.append({"image_id": stem, "reason": "empty_mask"})
            else:
                faces.append(BenchmarkFace(image_id=stem, label=class_id, crop=processed.aligned.crop, mask=mask,
                                           severity=float(face.severity), shortcut=face.shortcut))
        if progress is not None:
            progress(n + 1, len(tasks))
    return BenchmarkSet(spec=spec.to_dict(), faces=faces, skipped=skipped)


def load_dataset_split(folder: str | Path, split: str = "test", *, classes: Sequence[str] = (),
                       limit_per_class: int | None = None) -> BenchmarkSet:
    """Benchmark faces from a written data set (``gestaltlens synth``): its aligned crops and aligned masks.

    Images without a detected face or with an empty mask (every ``unaffected`` face) are left out.
    """
    from PIL import Image

    from app.synth.dataset import read_manifest

    folder = Path(folder)
    wanted = set(classes)
    taken: dict[str, int] = {}
    faces, skipped = [], []
    for record in read_manifest(folder):
        if record["split"] != split or (wanted and record["label"] not in wanted):
            continue
        label = str(record["label"])
        if limit_per_class is not None and taken.get(label, 0) >= limit_per_class:
            continue
        if not record.get("aligned") or not record.get("aligned_mask"):
            skipped.append({"image_id": str(record["id"]), "reason": str(record.get("detect_error") or "undetected")})
            continue
        mask = np.asarray(Image.open(folder / str(record["aligned_mask"]))) >= 128
        if not mask.any():
            continue
        crop = np.asarray(Image.open(folder / str(record["aligned"])).convert("RGB"))
        faces.append(BenchmarkFace(image_id=str(record["id"]), label=label, crop=crop, mask=mask,
                                   severity=float(record["severity"]), shortcut=bool(record.get("shortcut"))))
        taken[label] = taken.get(label, 0) + 1
    spec = {"dataset": str(folder), "split": split, "classes": sorted(wanted), "limit_per_class": limit_per_class}
    return BenchmarkSet(spec=spec, faces=faces, skipped=skipped)
