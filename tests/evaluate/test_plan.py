"""The run's plan: phase costs in passes, progress shared out by them, threads by the share of the cores."""

from __future__ import annotations

import pytest

from app.evaluate import plan
from app.evaluate.threads import fair_threads, torch_threads


def test_threads_follow_the_share_of_the_cores() -> None:
    assert fair_threads(cores=2, load=0.3) == 2
    assert fair_threads(cores=2, load=1.2) == 1
    assert fair_threads(cores=2, load=6.0) == 1
    assert fair_threads(cores=16, load=4.5) == 12
    import torch

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_phase_costs_count_what_each_phase_computes() -> None:
    base = dict(n_faces=16, sanity_faces=4, sanity_methods=["saliency", "occlusion"], random_logit=True,
                robustness_samples=3,
                similarity_methods=[], step_rule=False)
    with_independent = plan.phase_costs(["saliency", "occlusion"], independent=True, **base)
    cascade_only = plan.phase_costs(["saliency", "occlusion"], independent=False, **base)
    assert with_independent["sanity"] == pytest.approx(cascade_only["sanity"] * 14 / 8)
    cheap_only = plan.phase_costs(["saliency", "occlusion"], independent=True, independent_methods=["saliency"],
                                  **base)
    assert cascade_only["sanity"] < cheap_only["sanity"] < with_independent["sanity"]
    assert plan.map_passes(["saliency", "input_x_gradient"]) == plan.map_passes(["saliency"])  # one shared pass
    assert plan.map_passes(["occlusion"]) > 100 * plan.map_passes(["saliency"])


def test_progress_is_shared_out_by_cost_and_ends_at_one() -> None:
    seen: list[float] = []
    phases = plan.Phases({"faces": 3.0, "sanity": 1.0}, lambda f, m: seen.append(f))
    faces = phases.reporter("faces")
    for k in range(3):
        faces((k + 1) / 3, "face")
    assert seen[-1] == pytest.approx(0.75)
    phases.fraction("sanity", "sanity checks")(0.5)
    assert seen[-1] == pytest.approx(0.875)
    phases.done()
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert set(phases.seconds()) == {"faces", "sanity"}
