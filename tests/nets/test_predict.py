"""Ranking: nearest gallery image per syndrome, softmax scores, no gallery, concurrent use."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from app.nets import LoadedModel, embed, iresnet18, load_model, predict
from app.nets.gallery import write_gallery
from tests.nets.helpers import crop, randomise_, write_folder


@pytest.fixture(scope="module")
def network():
    return randomise_(iresnet18(num_classes=5, width=0.25), seed=21)


@pytest.fixture
def plain(tmp_path: Path, network) -> LoadedModel:
    write_folder(tmp_path / "plain", network)
    return load_model(tmp_path, "plain")


def _at_angle(unit: np.ndarray, angle: float, rng: np.random.Generator, norm: float) -> np.ndarray:
    """A vector at ``angle`` radians from ``unit`` (so its cosine distance is 1 - cos(angle)), of length norm."""
    other = rng.normal(size=unit.shape)
    other -= other @ unit * unit
    other /= np.linalg.norm(other)
    return norm * (np.cos(angle) * unit + np.sin(angle) * other)


def test_ranking_follows_the_nearest_gallery_image(tmp_path: Path, network, plain: LoadedModel) -> None:
    image = crop(5)
    query = predict(plain, image).embedding
    unit = query / np.linalg.norm(query)
    rng = np.random.default_rng(0)
    # class index: angles of its gallery images. syn_e (4) has no gallery image at all.
    layout = {0: [1.2, 0.5], 1: [0.8], 2: [0.1, 2.0, 1.5], 3: [0.3]}
    rows, labels, ids = [], [], []
    for c, angles in layout.items():
        for k, angle in enumerate(angles):
            rows.append(_at_angle(unit, angle, rng, norm=rng.uniform(0.5, 20.0)))  # norms must not matter
            labels.append(f"syn_{'abcde'[c]}")
            ids.append(f"g{c}_{k}")
    folder = write_folder(tmp_path / "gal", network, gallery="gallery.npz")
    write_gallery(folder / "gallery.npz", np.array(rows), labels, ids)
    model = load_model(tmp_path, "gal")

    result = predict(model, image, top_k=5)
    assert result.ranking == "gallery" and result.model_version == "gal@0.1.0"
    assert [p.syndrome_id for p in result.ranked] == ["syn_c", "syn_d", "syn_a", "syn_b", "syn_e"]
    assert [p.rank for p in result.ranked] == [1, 2, 3, 4, 5]
    assert [p.image_id for p in result.ranked] == ["g2_0", "g3_0", "g0_1", "g1_0", None]
    expected = [1 - np.cos(a) for a in (0.1, 0.3, 0.5, 0.8)]
    np.testing.assert_allclose([p.distance for p in result.ranked[:4]], expected, atol=1e-5)
    assert result.ranked[4].distance is None
    for p in result.ranked:  # score is the head's softmax for that syndrome, whatever the rank
        assert p.score == pytest.approx(result.softmax["abcde".index(p.syndrome_id[-1])])
    assert result.ranked[2].omim == "100000" and result.ranked[0].omim is None
    assert result.ranked[2].name == "Synthetic syndrome 0"
    assert [p.syndrome_id for p in predict(model, image, top_k=2).ranked] == ["syn_c", "syn_d"]


def test_softmax_sums_to_one_and_ranks_without_gallery(plain: LoadedModel) -> None:
    result = predict(plain, crop(6), top_k=3)
    assert result.ranking == "softmax" and len(result.softmax) == 5
    assert sum(result.softmax) == pytest.approx(1.0, abs=1e-9)
    assert len(result.ranked) == 3 and all(p.distance is None and p.image_id is None for p in result.ranked)
    scores = [p.score for p in result.ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(max(result.softmax))
    with torch.inference_mode():
        logits, embedding = plain.network(torch.from_numpy(crop(6)).permute(2, 0, 1)[None].float() / 127.5 - 1)
    np.testing.assert_allclose(result.softmax, torch.softmax(logits, 1)[0].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.embedding, embedding[0].numpy(), rtol=1e-4, atol=1e-5)
    assert result.embedding.shape == (512,) and result.embedding.dtype == np.float32


def test_embed_matches_predict_and_batches(plain: LoadedModel) -> None:
    images = np.stack([crop(i) for i in range(5)])
    batched = embed(plain, images, batch_size=2)
    assert batched.shape == (5, 512) and batched.dtype == np.float32
    np.testing.assert_allclose(batched[3], predict(plain, images[3]).embedding, rtol=1e-4, atol=1e-5)


def test_predict_is_safe_from_several_threads(plain: LoadedModel) -> None:
    images = [crop(100 + i) for i in range(3)]
    serial = [predict(plain, image) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(predict, plain, images[i % 3]) for i in range(16)]
        parallel = [f.result() for f in futures]
    for i, result in enumerate(parallel):
        reference = serial[i % 3]
        np.testing.assert_allclose(result.embedding, reference.embedding, rtol=1e-6, atol=1e-6)
        assert [p.syndrome_id for p in result.ranked] == [p.syndrome_id for p in reference.ranked]
    assert not plain.network.training


def test_predict_refuses_a_network_in_training_mode(tmp_path: Path, network) -> None:
    write_folder(tmp_path / "m", network)
    model = load_model(tmp_path, "m")
    model.network.train()
    try:
        with pytest.raises(RuntimeError, match="training mode"):
            predict(model, crop(1))
    finally:
        model.network.eval()


def test_predict_takes_one_crop(plain: LoadedModel) -> None:
    with pytest.raises(ValueError, match="one aligned crop"):
        predict(plain, np.stack([crop(1), crop(2)]))
    with pytest.raises(ValueError, match="aligned crops must be uint8"):
        predict(plain, crop(1).astype(np.float32))
