"""Same (seed, class, index) -> the same bytes, wherever and however the image is generated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from app.synth.dataset import DatasetSummary, read_manifest
from app.synth.generate import ShortcutSpec, generate_one
from tests.synth.conftest import SEED, SHORTCUT


def test_same_seed_same_image() -> None:
    a = generate_one(3, "syn_a", 4)
    b = generate_one(3, "syn_a", 4)
    assert a.jpeg == b.jpeg
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.landmarks, b.landmarks)
    assert (a.severity, a.features, a.shortcut) == (b.severity, b.features, b.shortcut)


def test_different_seed_or_index_different_image() -> None:
    a = generate_one(3, "syn_a", 4)
    for other in (generate_one(4, "syn_a", 4), generate_one(3, "syn_a", 5), generate_one(3, "syn_b", 4)):
        assert other.jpeg != a.jpeg
        assert not np.allclose(other.landmarks, a.landmarks)


def test_severity_zero_is_the_same_person_without_the_feature() -> None:
    on = generate_one(3, "syn_c", 1)
    off = generate_one(3, "syn_c", 1, severity=0.0)
    assert on.severity >= 0.3 and on.features == ("long_philtrum", "thin_upper_lip_vermilion")
    assert off.severity == 0.0 and off.features == () and not off.mask.any()
    assert off.rgb.shape == on.rgb.shape
    # The feature moves the mouth, not the eyes or the nose.
    assert np.allclose(on.landmarks[:3], off.landmarks[:3])
    assert on.landmarks[3, 1] > off.landmarks[3, 1] and on.landmarks[4, 1] > off.landmarks[4, 1]


def test_a_shortcut_that_is_absent_leaves_the_image_alone() -> None:
    plain = generate_one(3, "syn_d", 2)
    never = generate_one(3, "syn_d", 2, shortcut=ShortcutSpec("syn_d", probability=0.0, other_probability=0.0))
    always = generate_one(3, "syn_d", 2, shortcut=ShortcutSpec("syn_d", probability=1.0))
    assert never.jpeg == plain.jpeg and not never.shortcut
    assert always.shortcut and always.jpeg != plain.jpeg
    assert np.array_equal(always.mask, plain.mask) and np.array_equal(always.landmarks, plain.landmarks)


def test_an_image_regenerated_alone_equals_the_batch(sample_dataset: tuple[Path, DatasetSummary]) -> None:
    out, _ = sample_dataset
    records = read_manifest(out)
    chosen = [r for r in records if r["shortcut"]][:1] + records[::17]
    for record in chosen:
        label, index = record["label"], int(str(record["id"]).rsplit("-", 1)[1])
        alone = generate_one(SEED, label, index, shortcut=SHORTCUT)
        assert (out / record["image"]).read_bytes() == alone.jpeg, record["id"]
        assert np.array_equal(np.asarray(Image.open(out / record["mask"])), alone.mask)
        assert np.allclose(record["landmarks"], alone.landmarks, atol=1e-3)
        assert record["shortcut"] == alone.shortcut


def test_worker_count_does_not_change_the_data(
    sample_dataset: tuple[Path, DatasetSummary], tiny_dataset: tuple[Path, DatasetSummary]
) -> None:
    """Two worker processes and one in-process worker write identical files and records."""
    sample_dir, _ = sample_dataset
    tiny_dir, _ = tiny_dataset
    sample = {r["id"]: r for r in read_manifest(sample_dir)}
    tiny = read_manifest(tiny_dir)
    assert tiny
    for record in tiny:
        twin = sample[record["id"]]
        for key in record:
            if key != "split":  # the split depends on how many images the class has
                assert record[key] == twin[key], (record["id"], key)
        for key in ("image", "mask", "aligned", "aligned_mask"):
            if record[key] is not None:
                assert (tiny_dir / record[key]).read_bytes() == (sample_dir / twin[key]).read_bytes()
