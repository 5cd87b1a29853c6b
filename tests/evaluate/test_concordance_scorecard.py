"""The scorecard carries region concordance per method with its chance level (issue 23's hook)."""

from __future__ import annotations

from app.evaluate.benchmark import BenchmarkSpec, build_benchmark
from app.evaluate.scorecard import EvaluationOptions, evaluate_model
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT


def test_scorecard_has_region_concordance_with_chance() -> None:
    model = load_model(PROJECT_ROOT / "models", "demo")
    bench = build_benchmark(BenchmarkSpec(per_class=1, classes=("syn_a", "syn_g")))
    card = evaluate_model(model.network, [label.id for label in model.labels], bench, ["saliency"],
                          options=EvaluationOptions(sanity_faces=0, similarity_methods=(), ig_tolerance=0,
                                                    road_percentages=()))
    result = card["region_concordance"]["saliency"]
    assert result["n"] == len(bench.faces) == 2
    assert 0.0 < result["chance"] < 0.25  # eyes, and chin / jaw: small shares of the crop
    assert 0.0 <= result["share"]["low"] <= result["share"]["mean"] <= result["share"]["high"] <= 1.0
    assert result["lift"]["mean"] > 0
