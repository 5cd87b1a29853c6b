"""Fixtures for the synthetic-face tests: one shared detector and two small data sets written once.

``sample_dataset`` (7 images per class, 2 worker processes, a sticker shortcut on syn_b) serves the
detection, region and batch-determinism tests; ``tiny_dataset`` (workers=1, imbalance, half test split)
is validated file by file. Both use the same seed and shortcut, so images with the same id must be
byte-identical across them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.synth.dataset import DatasetSummary, write_dataset
from app.synth.generate import ShortcutSpec
from app.vision.detect import FaceDetector

SEED = 7
SHORTCUT = ShortcutSpec(class_id="syn_b", probability=0.9, other_probability=0.05)


@pytest.fixture(scope="session")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSummary]:
    out = tmp_path_factory.mktemp("synth") / "sample"
    summary = write_dataset(out, seed=SEED, count_per_class=7, shortcut=SHORTCUT, workers=2)
    return out, summary


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSummary]:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    calls: list[tuple[int, int]] = []
    summary = write_dataset(
        out,
        seed=SEED,
        count_per_class=2,
        imbalance=2.0,
        test_fraction=0.5,
        shortcut=SHORTCUT,
        workers=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls and calls[-1] == (summary.n_images, summary.n_images)
    assert [done for done, _ in calls] == list(range(1, summary.n_images + 1))
    return out, summary
