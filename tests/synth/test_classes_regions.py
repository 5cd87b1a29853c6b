"""The region vocabulary and the class definitions: well-formed data, and masks that mean something."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from app.synth.classes import CLASS_IDS, CLASSES, FEATURES, class_index, get_class
from app.synth.dataset import DatasetSummary, read_manifest
from app.synth.regions import REGION_IDS, REGIONS, region_mask, region_masks, regions_for_hpo

HPO_ID = re.compile(r"^HP:\d{7}$")
DESIGN_REGIONS = {
    "forehead",
    "eyebrows",
    "eyes",
    "nose",
    "philtrum_upper_lip",
    "mouth",
    "chin_jaw",
    "cheeks",
    "ears",
    "hair_background",
}


def test_region_vocabulary_matches_the_design() -> None:
    assert set(REGION_IDS) == DESIGN_REGIONS
    assert len(REGION_IDS) == len(set(REGION_IDS))
    for region in REGIONS:
        assert region.name and region.hpo
        assert all(HPO_ID.match(term.id) and term.name for term in region.hpo)
    assert regions_for_hpo("HP:0000316") == ["eyes"]
    assert regions_for_hpo("HP:0000347") == ["chin_jaw"]


def test_every_region_mask_is_a_proper_part_of_the_crop() -> None:
    masks = region_masks()
    assert list(masks) == list(REGION_IDS)
    for region_id, mask in masks.items():
        assert mask.shape == (112, 112) and mask.dtype == bool
        area = mask.mean()
        assert 0.003 < area < 0.6, (region_id, area)
    # Scaled templates give the same regions at another resolution.
    for region_id in REGION_IDS:
        ratio = region_mask(region_id, 224).sum() / region_mask(region_id).sum()
        assert 3.6 < ratio < 4.4, (region_id, ratio)
    # The inner-face regions do not swallow each other.
    for a in ("eyes", "nose", "mouth", "eyebrows"):
        for b in ("eyes", "nose", "mouth", "eyebrows"):
            if a != b:
                overlap = (masks[a] & masks[b]).sum() / masks[a].sum()
                assert overlap < 0.2, (a, b, overlap)


def test_classes_are_well_formed() -> None:
    assert CLASSES[0].id == "unaffected" and not CLASSES[0].features and not CLASSES[0].regions
    syndromes = CLASSES[1:]
    assert len(syndromes) >= 7
    assert len(set(CLASS_IDS)) == len(CLASS_IDS)
    for index, cls in enumerate(CLASSES):
        assert class_index(cls.id) == index and get_class(cls.id) is cls
        entry = cls.to_dict()
        assert set(entry) == {"id", "name", "omim", "hpo", "features", "regions", "description"}
        assert entry["omim"] is None and entry["description"]
        assert [h["id"] for h in entry["hpo"]] == [FEATURES[f].hpo.id for f in cls.features]
    for cls in syndromes:
        assert 1 <= len(cls.features) <= 2
        assert all(HPO_ID.match(term.id) for term in cls.hpo)
        assert set(cls.regions) <= set(REGION_IDS)
        assert {FEATURES[f].region for f in cls.features} <= set(cls.regions)
        # Each feature's HPO term is filed under its region in the vocabulary.
        for feature in cls.features:
            assert FEATURES[feature].region in regions_for_hpo(FEATURES[feature].hpo.id)
    # Syndromes differ by their features.
    assert len({cls.features for cls in syndromes}) == len(syndromes)


def test_region_masks_overlap_the_ground_truth(sample_dataset: tuple[Path, DatasetSummary]) -> None:
    """The regions a syndrome names hold most of its aligned ground-truth mask, more than any other region."""
    out, _ = sample_dataset
    masks = region_masks()
    by_class: dict[str, list[np.ndarray]] = {}
    for record in read_manifest(out):
        if record["detected"]:
            mask = np.asarray(Image.open(out / record["aligned_mask"])) > 0
            by_class.setdefault(record["label"], []).append(mask)
    assert not any(m.any() for m in by_class["unaffected"])
    for cls in CLASSES[1:]:
        stack = np.array(by_class[cls.id])
        assert stack.any(axis=(1, 2)).all(), cls.id
        named = np.zeros((112, 112), bool)
        for region_id in cls.regions:
            named |= masks[region_id]
        inside = np.mean([(m & named).sum() / m.sum() for m in stack])
        assert inside >= 0.5, (cls.id, inside)
        share = {rid: (stack & masks[rid]).sum() / stack.sum() for rid in REGION_IDS}
        assert max(share, key=share.get) in cls.regions, (cls.id, share)


def test_the_vocabulary_imports_light() -> None:
    """Rating forms import the regions and classes; that must not drag in OpenCV, Pillow or the detector."""
    code = (
        "import sys, app.synth.regions, app.synth.classes; "
        "print(sorted(m for m in ('cv2', 'PIL', 'torch', 'scipy', 'app.vision') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "[]", result.stdout
