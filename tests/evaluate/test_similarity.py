"""Similarity maps on ground truth: pairs are formed as documented and every pair is scored."""

from __future__ import annotations

import torch

from app.evaluate.benchmark import BenchmarkSpec, build_benchmark
from app.evaluate.similarity import pairs, similarity_localisation
from app.explain.engine import Explainer
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT


def test_same_and_different_syndrome_pairs_are_scored() -> None:
    torch.set_num_threads(1)
    faces = build_benchmark(BenchmarkSpec(per_class=2, classes=("syn_a", "syn_d"))).faces
    assert [f.label for f in faces] == ["syn_a", "syn_a", "syn_d", "syn_d"]
    same, different = pairs(faces)
    assert same == [(0, 1), (1, 0), (2, 3), (3, 2)]
    assert different == [(0, 2), (1, 3), (2, 0), (3, 1)]
    assert all(faces[i].label == faces[j].label for i, j in same)
    assert all(faces[i].label != faces[j].label for i, j in different)

    model = load_model(PROJECT_ROOT / "models", "demo")
    progress: list[float] = []
    result = similarity_localisation(Explainer(model.network), model.network, faces, ["gradcam"],
                                     progress=progress.append)
    assert result["pairs"] == {"same": 4, "different": 4}
    # a job's heartbeat: reported within every pair, rising to the end
    assert len(progress) >= 8 and progress == sorted(progress) and progress[-1] == 1.0
    for group in ("same", "different"):
        scores = result["methods"]["gradcam"][group]
        assert scores["mass"]["n"] == 4 and 0.0 <= scores["mass"]["mean"] <= 1.0
        assert scores["pointing"]["low"] <= scores["pointing"]["mean"] <= scores["pointing"]["high"]
    assert similarity_localisation(Explainer(model.network), model.network, faces[:1], ["gradcam"]) == {}
