"""Write a synthetic data set folder (format ``gestaltlens-synth/1``) that trainers read.

Layout::

    <out>/dataset.json      seed, counts, classes (index = label_index; "unaffected" first), detection rate
    <out>/manifest.jsonl    one JSON object per image, in class then index order (see :func:`_record`;
                            besides the fields of the format it carries ``detect_error``, the pipeline's
                            error code when no single face was found, else null)
    <out>/images/<id>.jpg   the photo as generated (JPEG, quality 70-95)
    <out>/masks/<id>.png    ground-truth mask, photo pixels, 0/255 (all 0 for unaffected)
    <out>/aligned/<id>.png  the real pipeline's 112x112 aligned crop (only if a face was detected)
    <out>/aligned_masks/<id>.png  the mask warped with the pipeline's alignment matrix

Every photo goes through the real ``process_photo`` (YuNet, roll correction, alignment), exactly as an
uploaded photo would, so trainers see the same crops the app produces, and the data set reports how
often detection fails and how far the detector's landmarks are from the truth.

Class imbalance: ``imbalance = r`` gives the i-th syndrome (i = 0 .. K-1, in class order)
``round(count_per_class * r ** (-i / (K - 1)))`` images, at least 1: the first syndrome keeps
``count_per_class``, the last gets ``count_per_class / r``, the ones between fall geometrically.
``unaffected`` always keeps ``count_per_class`` (in clinical data it is the large class).

Split: within each class exactly ``round(n * test_fraction)`` images go to the test split: those with the
lowest per-image split draws (a random stream of their own), so the split is fixed by the seed and counts,
and growing a class moves few images across it.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.synth.classes import CLASSES, class_index
from app.synth.generate import GENERATOR_VERSION, ShortcutSpec, generate_one, image_id
from app.synth.seeding import STREAM_SPLIT, image_rng
from app.vision.align import TEMPLATE_SIZE
from app.vision.detect import FaceDetector
from app.vision.errors import IntakeError
from app.vision.geometry import apply_matrix
from app.vision.pipeline import process_photo

FORMAT = "gestaltlens-synth/1"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Task:
    class_id: str
    index: int
    split: str


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`write_dataset` wrote (the same numbers as dataset.json)."""

    out_dir: Path
    counts: dict[str, int]
    n_images: int
    n_detected: int
    detection_rate: float
    seconds: float


def class_counts(count_per_class: int, imbalance: float = 1.0) -> dict[str, int]:
    """Images per class id under the documented geometric imbalance (see the module docstring)."""
    if count_per_class < 1:
        raise ValueError(f"count_per_class must be at least 1, got {count_per_class}")
    if imbalance < 1.0:
        raise ValueError(f"imbalance must be >= 1 (1 = balanced), got {imbalance}")
    syndromes = [c for c in CLASSES if c.features]
    last = max(1, len(syndromes) - 1)
    counts = {c.id: count_per_class for c in CLASSES if not c.features}
    for i, cls in enumerate(syndromes):
        counts[cls.id] = max(1, round(count_per_class * imbalance ** (-i / last)))
    return {c.id: counts[c.id] for c in CLASSES}


def split_indices(seed: int, class_id: str, n: int, test_fraction: float) -> set[int]:
    """Indices of the class's test images: the ``round(n * test_fraction)`` with the lowest split draw."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(n * test_fraction)
    draws = [image_rng(seed, class_id, i, STREAM_SPLIT).uniform() for i in range(n)]
    return set(int(i) for i in np.argsort(draws, kind="stable")[:n_test])


def plan(seed: int, count_per_class: int, imbalance: float, test_fraction: float) -> list[Task]:
    """Every image of the data set in manifest order: classes in index order, then by index."""
    tasks = []
    for class_id, n in class_counts(count_per_class, imbalance).items():
        test = split_indices(seed, class_id, n, test_fraction)
        tasks += [Task(class_id, i, "test" if i in test else "train") for i in range(n)]
    return tasks


def write_dataset(
    out_dir: str | Path,
    *,
    seed: int,
    count_per_class: int,
    imbalance: float = 1.0,
    test_fraction: float = 0.2,
    shortcut: ShortcutSpec | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> DatasetSummary:
    """Generate, detect, align and write a data set; returns its summary.

    ``workers`` processes each hold their own FaceDetector (detection and alignment cost 0.1-0.3 s per
    image, more than rendering); ``workers=1`` runs in this process. ``progress(done, total)`` is called
    after every image. An existing data set in ``out_dir`` is refused unless ``overwrite``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    if not overwrite and ((out / "dataset.json").exists() or (out / "manifest.jsonl").exists()):
        raise FileExistsError(f"{out} already holds a data set; choose another folder or overwrite it")
    for sub in ("images", "masks", "aligned", "aligned_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    tasks = plan(seed, count_per_class, imbalance, test_fraction)
    total = len(tasks)
    records: list[dict[str, object]] = []
    for record in _run(tasks, out, seed, shortcut, workers):
        records.append(record)
        if progress is not None:
            progress(len(records), total)

    manifest = out / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    counts = class_counts(count_per_class, imbalance)
    n_detected = sum(1 for r in records if r["detected"])
    rate = n_detected / total if total else 0.0
    meta = {
        "format": FORMAT,
        "seed": seed,
        "count_per_class": count_per_class,
        "imbalance": float(imbalance),
        "test_fraction": float(test_fraction),
        "shortcut": shortcut.to_dict() if shortcut is not None else None,
        "classes": [c.to_dict() for c in CLASSES],
        "counts": counts,
        "detection_rate": rate,
        "n_images": total,
        "n_detected": n_detected,
        "generator_version": GENERATOR_VERSION,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return DatasetSummary(
        out_dir=out,
        counts=counts,
        n_images=total,
        n_detected=n_detected,
        detection_rate=rate,
        seconds=time.perf_counter() - start,
    )


# -- workers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every image of one ``write_dataset`` call shares."""

    out: Path
    seed: int
    shortcut: ShortcutSpec | None


_WORKER: tuple[_Job, FaceDetector] | None = None  # set in each worker process by _init_worker


def _init_worker(job: _Job) -> None:
    """Per process: one detector, and OpenCV kept to one thread so workers do not fight over cores."""
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = (job, FaceDetector())


def _work(task: Task) -> dict[str, object]:
    if _WORKER is None:
        raise RuntimeError("worker process was not initialised")
    job, detector = _WORKER
    return _record(task, job, detector)


def _run(
    tasks: list[Task], out: Path, seed: int, shortcut: ShortcutSpec | None, workers: int
) -> Iterator[dict[str, object]]:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    job = _Job(out=out, seed=seed, shortcut=shortcut)
    if workers == 1 or len(tasks) <= 1:
        detector = FaceDetector()
        for task in tasks:
            yield _record(task, job, detector)
        return
    # "spawn": a fresh interpreter per worker, not a fork of a parent that may hold OpenCV or torch
    # thread pools (forking those can deadlock).
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(8, len(tasks) // (4 * workers)))
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(job,)
    ) as pool:
        yield from pool.map(_work, tasks, chunksize=chunk)


def _record(task: Task, job: _Job, detector: FaceDetector) -> dict[str, object]:
    """Generate one image, run it through the real pipeline, write its files; its manifest line."""
    out = job.out
    face = generate_one(job.seed, task.class_id, task.index, shortcut=job.shortcut)
    stem = image_id(task.class_id, task.index)
    (out / "images" / f"{stem}.jpg").write_bytes(face.jpeg)
    _write_png(out / "masks" / f"{stem}.png", face.mask)
    record: dict[str, object] = {
        "id": stem,
        "split": task.split,
        "label": task.class_id,
        "label_index": class_index(task.class_id),
        "severity": round(face.severity, 4),
        "features": list(face.features),
        "shortcut": face.shortcut,
        "image": f"images/{stem}.jpg",
        "mask": f"masks/{stem}.png",
        "landmarks": _points(face.landmarks),
        "detected": False,
        "aligned": None,
        "aligned_mask": None,
        "landmarks_aligned": None,
        "align_matrix": None,
        "detected_error_px": None,
        "detect_error": None,
    }
    try:
        processed = process_photo(face.jpeg, detector=detector)
    except IntakeError as error:
        record["detect_error"] = error.code
        return record
    aligned = processed.aligned
    warped = cv2.warpAffine(
        face.mask,
        aligned.matrix,
        (TEMPLATE_SIZE, TEMPLATE_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    aligned_mask = np.where(warped >= 128, 255, 0).astype(np.uint8)
    _write_png(out / "aligned" / f"{stem}.png", aligned.crop)
    _write_png(out / "aligned_masks" / f"{stem}.png", aligned_mask)
    error_px = float(np.linalg.norm(processed.face.landmarks - face.landmarks, axis=1).max())
    record.update(
        detected=True,
        aligned=f"aligned/{stem}.png",
        aligned_mask=f"aligned_masks/{stem}.png",
        landmarks_aligned=_points(apply_matrix(aligned.matrix, face.landmarks)),
        align_matrix=[[round(float(v), 6) for v in row] for row in aligned.matrix],
        detected_error_px=round(error_px, 3),
    )
    return record


def _points(points: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 3), round(float(y), 3)] for x, y in np.asarray(points).reshape(-1, 2)]


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def read_manifest(out_dir: str | Path) -> list[dict[str, object]]:
    """The manifest of a data set folder as a list of dicts (for tests, benches and quick looks)."""
    with (Path(out_dir) / "manifest.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
