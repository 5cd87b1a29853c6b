"""Known-answer tests of the sanity checks (Adebayo et al. 2018; Sixt et al. 2020).

Maps that randomisation leaves unchanged must fail, whether they differ between faces or are one map for
every face; maps of pure noise (unrelated to anything) must pass; a stage fails only when its maps are
reliably more alike to the originals than another face's map is. Randomisation never touches torch's
global generator and never changes the given network.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from app.evaluate import sanity
from app.nets.iresnet import build_network


def _faces(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(112, 112)) for _ in range(n)]


def test_similarities_of_known_pairs() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(size=(112, 112))
    assert sanity.similarities(a, a) == pytest.approx({"spearman": 1.0, "ssim": 1.0, "hog": 1.0})
    assert sanity.spearman_abs(a, -a) == pytest.approx(1.0)  # magnitudes: the sign is not compared
    unrelated = sanity.similarities(a, rng.normal(size=(112, 112)))
    assert abs(unrelated["spearman"]) < 0.05 and abs(unrelated["hog"]) < 0.2


def test_maps_that_randomisation_leaves_unchanged_fail_every_stage() -> None:
    original = _faces()
    summary = sanity.summarise_sanity("m", original, {s: original for s, _ in sanity.CASCADE},
                                      independent={"layer4": original}, random_logit=original)
    assert not summary.passes
    assert all(v.fails and v.unchanged for v in summary.cascade.values())
    assert summary.independent["layer4"].fails and summary.random_logit is not None and summary.random_logit.fails
    assert summary.cascade["embedding"].margin.low > 0.9  # 1 against a between-faces level near 0


def test_one_map_for_every_face_fails_although_it_has_no_margin_over_the_reference() -> None:
    same = [np.outer(np.hanning(112), np.hanning(112))] * 5
    summary = sanity.summarise_sanity("m", same, {"embedding": same})
    assert summary.reference["spearman"].mean == pytest.approx(1.0)
    assert summary.cascade["embedding"].margin.mean == pytest.approx(0.0)
    assert not summary.passes


def test_maps_of_pure_noise_pass() -> None:
    original = _faces(seed=1)
    randomised = {s: _faces(seed=10 + i) for i, (s, _) in enumerate(sanity.CASCADE)}
    summary = sanity.summarise_sanity("noise", original, randomised, random_logit=_faces(seed=99))
    assert summary.passes and summary.random_logit is not None and not summary.random_logit.fails
    assert summary.cascade["embedding"].margin.low < 0 < summary.cascade["embedding"].margin.high
    # a 95 % interval: noise fails a stage by chance in about 1 draw of 40 (one-sided), not 1 in 8
    draws = [sanity.compare_stage(_faces(5, seed=s), _faces(5, seed=1000 + s), sanity.between_faces(_faces(5, seed=s)))
             for s in range(24)]
    assert sum(d.fails for d in draws) <= 2


def test_a_stage_fails_only_when_reliably_above_the_between_faces_reference() -> None:
    rng = np.random.default_rng(3)
    shared = rng.normal(size=(112, 112))  # what every face's map has in common (the image's edges, say)
    original = [shared + rng.normal(size=(112, 112)) for _ in range(8)]
    like_another_face = [shared + rng.normal(size=(112, 112)) for _ in range(8)]
    kept = [o + 0.3 * rng.normal(size=(112, 112)) for o in original]
    summary = sanity.summarise_sanity("m", original, {"classifier": kept, "embedding": like_another_face})
    assert summary.reference["spearman"].mean > 0.1  # the shared part makes faces alike
    assert summary.cascade["classifier"].fails  # far more alike than another face's map
    assert not summary.cascade["embedding"].fails and summary.passes  # as alike as another face's map: passes


def test_randomisation_uses_its_own_generator_and_leaves_the_network_alone() -> None:
    torch.manual_seed(0)
    network = build_network("iresnet18", num_classes=3, width=0.25).eval()
    before = copy.deepcopy(network.state_dict())
    state = torch.random.get_rng_state()
    cascade = list(sanity.cascading_randomisation(network, seed=1))
    independent = list(sanity.independent_randomisation(network, seed=1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator was neither used nor reseeded
    assert [name for name, _ in cascade] == [name for name, _ in sanity.CASCADE]
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    classifier_only = cascade[0][1].state_dict()
    assert not torch.equal(classifier_only["head.weight"], before["head.weight"])
    assert torch.equal(classifier_only["fc.weight"], before["fc.weight"])  # the embedding is a stage of its own
    embedding = cascade[1][1].state_dict()
    assert not torch.equal(embedding["fc.weight"], before["fc.weight"])
    assert torch.equal(embedding["layer4.0.conv1.weight"], before["layer4.0.conv1.weight"])  # not yet
    assert not torch.equal(cascade[-1][1].state_dict()["conv1.weight"], before["conv1.weight"])
    layer3 = dict(independent)["layer3"].state_dict()
    changed = {k for k, v in layer3.items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("layer3.") for k in changed)  # only that stage
    assert torch.equal(layer3["layer3.0.conv1.weight"], cascade[3][1].state_dict()["layer3.0.conv1.weight"])
    again = list(sanity.cascading_randomisation(network, seed=1))
    assert torch.equal(again[-1][1].state_dict()["conv1.weight"], cascade[-1][1].state_dict()["conv1.weight"])


def test_random_logit_targets_are_other_classes_and_seeded() -> None:
    targets = [0, 1, 2, 2, 1, 0] * 20
    others = sanity.other_targets(targets, 3, seed=4)
    assert all(o != t and 0 <= o < 3 for o, t in zip(others, targets, strict=True))
    assert others == sanity.other_targets(targets, 3, seed=4)
    assert {o for o, t in zip(others, targets, strict=True) if t == 0} == {1, 2}


def test_run_sanity_on_gradients_of_a_small_network() -> None:
    """Plain gradients of a real (untrained) iResNet: the classifier's randomisation changes them."""
    torch.manual_seed(0)
    network = build_network("iresnet18", num_classes=4, width=0.25).eval()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, size=(112, 112, 3), dtype=np.uint8) for _ in range(3)]

    asked: list[tuple[str, ...]] = []

    def explain(net: torch.nn.Module, crop: np.ndarray, target: int,
                methods: list[str] | None = None) -> dict[str, np.ndarray]:
        asked.append(tuple(methods or ("gradient", "constant")))
        x = (torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1).requires_grad_(True)
        net(x)[0][0, target].backward()
        grad = x.grad[0].sum(0).numpy()
        return {"gradient": grad, "constant": np.ones((112, 112))}

    results = sanity.run_sanity(explain, network, crops, [0, 1, 2], ["gradient", "constant"], seed=0,
                                independent_methods=["gradient"])
    gradient = results["gradient"].to_dict()
    assert list(gradient["cascade"]) == [s for s, _ in sanity.CASCADE]
    assert set(gradient["independent"]) == {s for s, _ in sanity.CASCADE}
    assert gradient["random_logit"] is not None
    assert not results["constant"].passes  # the same map whatever the weights
    # the independent test ran for the methods asked only; the other keeps its cascade and random logit
    assert results["constant"].independent == {} and results["constant"].random_logit is not None
    assert asked.count(("gradient",)) == 6 * 3  # 6 independent networks × 3 faces, asked for the cheap map only


def test_independent_randomisation_runs_by_default_for_the_cheap_methods_only() -> None:
    """The rule: a map of at most 2 passes (the gradient family) gets the independent test; occlusion, IG and
    SmoothGrad (121, 50, 25 passes) do not, and the scorecard says why beside their verdict."""
    from app.evaluate.scorecard import EvaluationOptions, independent_methods, independent_not_run
    from app.explain.registry import DEFAULT_PANEL

    options = EvaluationOptions()
    cheap = independent_methods(DEFAULT_PANEL, options.independent_max_passes)
    skipped = independent_not_run(DEFAULT_PANEL, options)
    assert set(skipped) == {"occlusion", "integrated_gradients", "smoothgrad"}
    assert set(cheap) | set(skipped) == set(DEFAULT_PANEL) and not set(cheap) & set(skipped)
    assert "121 passes" in skipped["occlusion"] and "random logit" in skipped["occlusion"]
    assert independent_not_run(DEFAULT_PANEL, EvaluationOptions(independent_max_passes=0)) == {}  # 0: every method
    assert set(independent_not_run(["saliency"], EvaluationOptions(independent=False))) == {"saliency"}
