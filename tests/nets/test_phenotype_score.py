"""The phenotype score on a tiny ontology: pyhpo's information content, hand-computed Resnik / best-match
average values, excluded terms, the exact per-term decomposition, and equality with pyhpo's own BMA.

The tiny ontology (all IC over its 4 OMIM diseases)::

    HP:0000001 All ── HP:0000118 Phenotypic abnormality ─┬─ HP:0000002 A ─┬─ HP:0000003 B   (OMIM 1, 4)
                                                         │                └─ HP:0000004 C   (OMIM 2)
                                                         └─ HP:0000005 D ─── HP:0000006 E   (OMIM 3, 4)
    OMIM:1 = {B (1/2), D}, OMIM:2 = {C}, OMIM:3 = {E (occasional, 0.17)}, OMIM:4 = {B, E}

    IC(All) = IC(Phenotypic abnormality) = 0, IC(A) = ln 4/3 (OMIM 1, 2, 4), IC(B) = ln 2, IC(C) = ln 4,
    IC(D) = ln 4/3 (OMIM 1, 3, 4), IC(E) = ln 2.

pyhpo keeps one global ontology; loading this folder replaces it for the test process (no other test
loads pyhpo: the app reads the IC it stored in the model folder).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.nets.phenotype import PhenotypeModel
from app.nets.phenotype_build import closure_table, hpoa_frequencies, load_pyhpo, omim_phenotype_file, parse_frequency

A, B, C, D, E = "HP:0000002", "HP:0000003", "HP:0000004", "HP:0000005", "HP:0000006"
L43, L2, L4 = math.log(4 / 3), math.log(2), math.log(4)

OBO = """format-version: 1.2
data-version: hp/releases/tiny-test

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000002
name: A
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000003
name: B
is_a: HP:0000002 ! A

[Term]
id: HP:0000004
name: C
is_a: HP:0000002 ! A

[Term]
id: HP:0000005
name: D
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000006
name: E
is_a: HP:0000005 ! D
"""

HPOA_ROWS = [
    ("OMIM:1", "One", "", B, "1/2"),
    ("OMIM:1", "One", "", D, ""),
    ("OMIM:2", "Two", "", C, ""),
    ("OMIM:3", "Three", "", E, "HP:0040283"),
    ("OMIM:4", "Four", "", B, ""),
    ("OMIM:4", "Four", "", E, "100%"),
    ("OMIM:4", "Four", "NOT", C, ""),
    ("ORPHA:1", "Orpha one", "", A, ""),  # pyhpo divides by the number of ORPHA and DECIPHER diseases too
    ("DECIPHER:1", "Decipher one", "", A, ""),
]


def _write_tiny(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hp.obo").write_text(OBO, encoding="utf-8")
    header = ("#description: tiny\n#version: tiny-annotations\ndatabase_id\tdisease_name\tqualifier\thpo_id\t"
              "reference\tevidence\tonset\tfrequency\tsex\tmodifier\taspect\tbiocuration\n")
    rows = "".join(f"{d}\t{n}\t{q}\t{h}\tPMID:1\tPCS\t\t{f}\t\t\tP\tX\n" for d, n, q, h, f in HPOA_ROWS)
    (folder / "phenotype.hpoa").write_text(header + rows, encoding="utf-8")
    (folder / "genes_to_phenotype.txt").write_text(
        "ncbi_gene_id\tgene_symbol\thpo_id\thpo_name\tfrequency\tdisease_id\n1\tG1\tHP:0000003\tB\t-\tOMIM:1\n",
        encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    folder = _write_tiny(tmp_path_factory.mktemp("tiny_hpo"))
    return load_pyhpo(folder), folder


@pytest.fixture(scope="module")
def scorer(tiny: tuple[object, Path]) -> PhenotypeModel:
    ontology, folder = tiny
    labels = [SimpleNamespace(id=f"s{i}", omim=f"OMIM:{i}") for i in (1, 2, 3, 4)]
    labels.append(SimpleNamespace(id="none", omim=None))
    return PhenotypeModel.from_json(omim_phenotype_file(ontology, labels, folder))


def test_information_content_is_pyhpos_omim_ic(tiny: tuple[object, Path]) -> None:
    table = closure_table(tiny[0], [B, C, E])
    assert table["HP:0000001"]["ic"] == 0.0 and table["HP:0000118"]["ic"] == 0.0
    assert table[A]["ic"] == pytest.approx(L43) and table[D]["ic"] == pytest.approx(L43)
    assert table[B]["ic"] == pytest.approx(L2) and table[E]["ic"] == pytest.approx(L2)
    assert table[C]["ic"] == pytest.approx(L4)
    assert table[E]["parents"] == [D]


def test_profiles_carry_the_hpoa_frequencies_and_leave_out_not_annotations(
        scorer: PhenotypeModel, tiny: tuple[object, Path]) -> None:
    assert [(p.id, p.frequency) for p in scorer.profiles["s1"]] == [(B, 0.5), (D, 1.0)]
    assert [(p.id, p.frequency) for p in scorer.profiles["s3"]] == [(E, 0.17)]
    assert [p.id for p in scorer.profiles["s4"]] == [B, E]  # the NOT C annotation is not in the profile
    assert scorer.profiles["none"] == ()
    assert hpoa_frequencies(tiny[1])[("OMIM:4", E)] == 1.0
    assert scorer.source["annotations"] == "tiny-annotations" and scorer.source["hpo"] == "hp/releases/tiny-test"


@pytest.mark.parametrize(("cell", "value"), [("HP:0040281", 0.895), ("3/4", 0.75), ("12%", 0.12), ("", None),
                                             ("HP:0040285", 0.0), ("x", None)])
def test_frequency_cells(cell: str, value: float | None) -> None:
    assert parse_frequency(cell) == value


def test_resnik_pairs(scorer: PhenotypeModel) -> None:
    anc = scorer.closure_ancestors
    assert scorer.similarity(anc(B), B) == pytest.approx(L2)
    assert scorer.similarity(anc(B), C) == pytest.approx(L43)  # common ancestor A
    assert scorer.similarity(anc(E), D) == pytest.approx(L43)
    assert scorer.similarity(anc(B), E) == 0.0  # only the root and Phenotypic abnormality in common


def test_frequency_weighted_bma_by_hand(scorer: PhenotypeModel) -> None:
    # Case {B, E} against OMIM:1 = {B f=0.5, D f=1}: best matches B->B ln2, E->D ln4/3; profile side
    # B (0.5) matched by B with ln2, D (1.0) matched by E with ln4/3; normaliser 2 + 1.5.
    result = scorer.score("s1", [B, E])
    assert result.score == pytest.approx((L2 + L43 + 0.5 * L2 + L43) / 3.5)
    parts = {c.id: c for c in result.contributions}
    assert parts[B].value == pytest.approx(1.5 * L2 / 3.5) and parts[B].best_match == B
    assert parts[E].value == pytest.approx(2 * L43 / 3.5) and parts[E].best_match == D
    assert sum(c.value for c in result.contributions) == result.score  # exactly: the score is that sum


def test_excluded_term_counts_against_a_syndrome_that_has_it(scorer: PhenotypeModel) -> None:
    without = scorer.score_all([B])
    scored = scorer.score_all([B], excluded=[E])
    # OMIM:3 = {E f=0.17}: penalty 0.17 * IC(E), normaliser 1 + 0.17, no positive match for B.
    assert scored["s3"].score == pytest.approx(-0.17 * L2 / 1.17)
    assert scored["s3"].contributions[1].excluded and scored["s3"].contributions[1].best_match == E
    # OMIM:2 = {C} has nothing under E: unchanged.
    assert scored["s2"].score == without["s2"].score == pytest.approx(L43)
    # Excluding an ancestor (D) contradicts a profile with its descendant E, weighted by IC(D).
    assert scorer.score("s3", [B], [D]).score == pytest.approx(-0.17 * L43 / 1.17)
    # OMIM:4 {B, E}: excluded E lowers it below the case without exclusions.
    assert scored["s4"].score < without["s4"].score


def test_decomposition_sums_to_the_score_for_every_syndrome(scorer: PhenotypeModel) -> None:
    for present, excluded in (([B, C, E], [D]), ([A], []), ([], [B]), ([C], [A, E])):
        for result in scorer.score_all(present, excluded).values():
            assert math.fsum(c.value for c in result.contributions) == pytest.approx(result.score, abs=1e-15)
            assert len(result.contributions) == len(present) + len(excluded)


def test_nothing_entered_scores_zero(scorer: PhenotypeModel) -> None:
    assert all(r.score == 0.0 and r.contributions == () for r in scorer.score_all([]).values())


def test_equals_pyhpo_bma_when_frequencies_are_one(scorer: PhenotypeModel, tiny: tuple[object, Path]) -> None:
    from pyhpo import HPOSet

    flat = PhenotypeModel(profiles={k: tuple(p.__class__(p.id, p.name, 1.0) for p in v)
                                    for k, v in scorer.profiles.items()},
                          ic=scorer.ic, parents=scorer.parents, synthetic=False)
    for case in ([B, E], [C], [A, E], [B, C, D]):
        for syndrome in ("s1", "s2", "s3", "s4"):
            profile = [p.id for p in flat.profiles[syndrome]]
            expected = HPOSet.from_queries(case).similarity(HPOSet.from_queries(profile), kind="omim",
                                                            method="resnik", combine="BMA")
            assert flat.score(syndrome, case).score == pytest.approx(expected, abs=1e-12), (case, syndrome)


def test_outside_ancestors_are_restricted_to_the_closure(scorer: PhenotypeModel) -> None:
    """The web app passes the full ontology's ancestors; terms outside the stored closure carry no IC."""
    result = scorer.score("s1", ["HP:9999999"], ancestors=lambda t: [A, "HP:0000118"])
    assert result.score == pytest.approx((L43 + 0.5 * L43) / 2.5)
