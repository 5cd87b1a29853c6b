"""The out-of-range flag: nearest-gallery Mahalanobis distance against a threshold calibrated on held-out faces.

On the committed demo model (synthetic faces only) a real photo must be flagged and fresh synthetic faces
(a seed neither the training set nor the calibration used) mostly not; the statistic itself is checked on
made-up Gaussian galleries where the right answer is known.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from app.nets.card import Label
from app.nets.gallery import build_gallery
from app.nets.ood import (
    CARD_KEY,
    OodScorer,
    calibrate,
    card_section,
    read_calibration,
    with_calibration,
)
from app.nets.predict import predict
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT
from app.synth.classes import CLASS_IDS
from app.synth.generate import generate_one
from app.vision.detect import FaceDetector
from app.vision.pipeline import process_photo

FRESH_SEED = 31337  # training used seed 0, the calibration 4242, the accuracy test 90210
PER_CLASS = 2


def _gallery(rng: np.random.Generator, n_per_class: int = 60, classes: int = 3):
    labels = [Label(id=f"c{k}", name=f"class {k}") for k in range(classes)]
    centres = rng.normal(0, 4, size=(classes, 512))
    scale = np.full(512, 0.05)
    scale[:8] = 1.0  # the gallery varies a lot along 8 directions, barely along the others
    rows, names = [], []
    for k in range(classes):
        rows.append(centres[k] + rng.normal(size=(n_per_class, 512)) * scale)
        names += [f"c{k}"] * n_per_class
    embeddings = np.concatenate(rows).astype(np.float32)
    return build_gallery(embeddings, names, [str(i) for i in range(len(names))], labels), centres, scale


def test_distance_follows_the_gallery_spread_not_the_euclidean_length() -> None:
    rng = np.random.default_rng(0)
    gallery, centres, scale = _gallery(rng)
    scorer = OodScorer(gallery)
    along, across = centres[0].copy(), centres[0].copy()
    along[0] += 3.0  # 3 units where the gallery spreads by 1: ordinary
    across[100] += 3.0  # 3 units where it spreads by 0.05: far outside
    d_along, d_across = scorer.distances(np.stack([along, across]))
    assert d_across > 3 * d_along
    # held-out points drawn like the gallery score like the gallery
    held_out = centres[1] + rng.normal(size=(200, 512)) * scale
    calibration = calibrate(scorer, held_out, source="test", quantile=0.95)
    assert calibration.n_calibration == calibration.n_evaluation == 100
    assert calibration.false_flag_rate <= 0.15
    assert d_across > calibration.threshold


def test_calibration_round_trips_through_the_card_and_needs_enough_faces() -> None:
    model = load_model(PROJECT_ROOT / "models", "demo")
    rng = np.random.default_rng(1)
    gallery, centres, scale = _gallery(rng)
    held_out = centres[2] + rng.normal(size=(40, 512)) * scale
    section = card_section(gallery, held_out, source="unit test")
    card = with_calibration(model.card, calibrate(OodScorer(gallery), held_out, source="unit test"))
    stored = dataclasses.replace(model.card, extra={CARD_KEY: section[CARD_KEY]})
    assert read_calibration(card) == read_calibration(stored)
    assert card_section(gallery, held_out[:5], source="too few") == {}
    assert read_calibration(dataclasses.replace(model.card, extra={})) is None
    with pytest.raises(ValueError, match="quantile"):
        calibrate(OodScorer(gallery), held_out, source="x", quantile=1.0)


def test_demo_card_documents_its_threshold_and_false_flag_rate() -> None:
    model = load_model(PROJECT_ROOT / "models", "demo")
    calibration = read_calibration(model.card)
    assert calibration is not None and calibration.threshold > 0
    assert calibration.n_evaluation >= 100 and calibration.false_flag_rate <= 0.05
    assert calibration.extra["real_photos"]  # the real-photo check it was made with is recorded


def test_real_photo_is_flagged_and_fresh_synthetic_faces_mostly_are_not() -> None:
    model = load_model(PROJECT_ROOT / "models", "demo")
    detector = FaceDetector()
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    astronaut = predict(model, process_photo(buffer.getvalue(), detector=detector).aligned.crop, top_k=1)
    verdict = astronaut.out_of_distribution
    assert verdict is not None and verdict.flagged, verdict
    # the ranking's own cosine distance would not have told: the astronaut still gets a confident syndrome
    assert astronaut.ranked[0].score > 0.5
    flagged = []
    for class_id in CLASS_IDS:
        for index in range(PER_CLASS):
            crop = process_photo(generate_one(FRESH_SEED, class_id, index).jpeg, detector=detector).aligned.crop
            result = predict(model, crop, top_k=1).out_of_distribution
            assert result is not None
            flagged.append(result.flagged)
            assert result.distance < verdict.distance
    print(f"fresh synthetic faces flagged: {sum(flagged)} of {len(flagged)}; astronaut {verdict.distance:.2f} "
          f"vs threshold {verdict.threshold:.2f}")
    assert sum(flagged) <= 2, flagged
