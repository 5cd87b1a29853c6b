"""Explaining an ensemble: one member chosen gives that network's maps; the member-averaged objective's
integrated-gradients map sums to the change in the *averaged* objective (completeness), for a logit and for
a similarity; methods whose maps do not average are refused for the averaged objective."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from app.explain.engine import Explainer
from app.explain.ensemble import EnsembleExplainer
from app.nets.ensemble import Member
from app.nets.preprocess import preprocess
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT
from app.synth.generate import generate_one
from app.vision.align import align_face

DEMO = load_model(PROJECT_ROOT / "models", "demo")


def _crop(seed: int, label: str) -> np.ndarray:
    face = generate_one(seed=seed, class_id=label, index=0, severity=1.0)
    return align_face(face.rgb, face.landmarks).crop


@pytest.fixture(scope="module")
def members() -> tuple[Member, ...]:
    """The demo network and a clearly different sibling (perturbed weights), like two fine-tuned members."""
    sibling = copy.deepcopy(DEMO.network)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for parameter in sibling.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3 * parameter.abs().mean())
    sibling.eval()
    headless = copy.deepcopy(sibling).eval()
    return (Member("m0", "demo", DEMO.network), Member("m1", "sibling", sibling),
            Member("m2", "glint", headless, has_head=False))


def _objective_change(members, crop: np.ndarray, fn) -> float:
    """mean_k f_k(x) - f_k(black): the change in the averaged objective along IG's path."""
    x = preprocess([crop])
    black = torch.full_like(x, -1.0)
    with torch.inference_mode():
        return float(np.mean([fn(m, x) - fn(m, black) for m in members]))


def test_one_member_chosen_is_that_network(members) -> None:
    crop = _crop(41, DEMO.labels[2].id)
    ensemble = EnsembleExplainer(members)
    got = ensemble.explain(crop, target=2, methods=["saliency", "gradcam"], member="m1")
    want = Explainer(members[1].network).explain(crop, target=2, methods=["saliency", "gradcam"])
    for method in want:
        np.testing.assert_allclose(got[method], want[method], rtol=1e-6, atol=1e-7)
    assert not np.allclose(got["saliency"], Explainer(members[0].network).explain(
        crop, target=2, methods=["saliency"])["saliency"], atol=1e-6)
    with pytest.raises(ValueError, match="no syndrome head"):
        ensemble.explain(crop, target=2, methods=["saliency"], member="glint")


def test_the_averaged_logit_objective_is_complete(members) -> None:
    crop = _crop(42, DEMO.labels[3].id)
    maps = EnsembleExplainer(members).explain(crop, target=3, methods=["integrated_gradients", "occlusion"])
    heads = [m for m in members if m.has_head]
    delta = _objective_change(heads, crop, lambda m, x: float(m.network(x)[0][0, 3]))
    assert maps["integrated_gradients"].sum() == pytest.approx(delta, rel=0.03)
    single = Explainer(heads[0].network).explain(crop, target=3, methods=["integrated_gradients"])
    single_delta = _objective_change(heads[:1], crop, lambda m, x: float(m.network(x)[0][0, 3]))
    assert abs(single_delta - delta) > 0.1 * abs(delta)  # the members really differ: the test can fail
    assert single["integrated_gradients"].sum() == pytest.approx(single_delta, rel=0.03)


def test_the_averaged_similarity_objective_is_complete_and_uses_every_member(members) -> None:
    crop, reference = _crop(43, DEMO.labels[1].id), _crop(44, DEMO.labels[1].id)
    maps = EnsembleExplainer(members).explain(crop, reference_crop=reference, methods=["integrated_gradients"])

    def cosine(member: Member, x: torch.Tensor) -> float:
        ref = member.network.embed(preprocess([reference]))[0]
        return float(torch.nn.functional.cosine_similarity(member.network.embed(x)[0], ref, dim=0))

    delta = _objective_change(members, crop, cosine)
    assert maps["integrated_gradients"].sum() == pytest.approx(delta, rel=0.05, abs=0.01)


def test_methods_that_do_not_average_are_refused_for_the_mean(members) -> None:
    crop = _crop(45, DEMO.labels[4].id)
    with pytest.raises(ValueError, match=r"saliency.*choose one member"):
        EnsembleExplainer(members).explain(crop, target=1, methods=["saliency", "integrated_gradients"])
    with pytest.raises(ValueError, match="unknown ensemble member"):
        EnsembleExplainer(members).explain(crop, target=1, methods=["gradcam"], member="m9")
