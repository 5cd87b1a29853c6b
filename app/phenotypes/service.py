"""A case's HPO terms: add (by id, checked against the shipped ontology), remove, list, batch-read for lists.

Terms are stored with the name the ontology gave them when added, so the page reads no ontology to show a
case; an alternative (merged) id is stored as the term it now belongs to. The audit trail records the
term id with the case id: a phenotype term is health data, so it is kept out of audit details entirely.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.errors import DomainError
from app.phenotypes.models import CasePhenotype
from app.phenotypes.ontology import HPO_ID, Term, ontology, region_ids_for_terms

__all__ = ["ObsoleteTerm", "UnknownTerm", "add_term", "case_terms", "check_term", "remove_term",
           "suggested_regions", "terms_for_cases"]


class UnknownTerm(DomainError):
    """422 ``unknown_hpo_term``: not an HPO id, or an id the shipped release does not know."""

    def __init__(self, term_id: str, detail: str | None = None, code: str = "unknown_hpo_term") -> None:
        super().__init__(code, detail or (f"{term_id[:40]!r} is not a term of the Human Phenotype Ontology "
                                          f"(release {ontology().version})"))


class ObsoleteTerm(UnknownTerm):
    """422 ``obsolete_hpo_term``: an id the shipped release marks obsolete, with its replacement if any
    (scoring an obsolete term silently as another would change what the clinician entered)."""

    def __init__(self, term_id: str, detail: str) -> None:
        super().__init__(term_id, detail, code="obsolete_hpo_term")


def _primary_id(term_id: str) -> str | None:
    """``HP:nnnnnnn`` for an id as typed (prefix and case forgiven), an alternative id of a merged term resolved to
    the term it became; None when it is not an HPO id at all."""
    match = HPO_ID.match(term_id.strip())
    if match is None:
        return None
    key = f"HP:{match.group(1)}"
    return ontology().alt.get(key, key)


def check_term(term_id: str) -> Term:
    """The current term for an id (alternative ids of merged terms resolve to the term they became);
    :class:`UnknownTerm` or :class:`ObsoleteTerm` otherwise."""
    hpo = ontology()
    primary = _primary_id(term_id)
    raw = hpo.terms.get(primary) if primary else None
    if raw is None:
        raise UnknownTerm(term_id)
    if raw.obsolete:
        hint = ""
        if raw.replaced_by and (replacement := hpo.terms.get(raw.replaced_by)) is not None:
            hint = f"; use {replacement.id} ({replacement.name}) instead"
        raise ObsoleteTerm(term_id, f"{raw.id} ({raw.name.removeprefix('obsolete ')}) is obsolete in the "
                                    f"Human Phenotype Ontology (release {hpo.version}){hint}")
    if raw.id not in hpo.phenotype_ids:
        raise UnknownTerm(term_id, f"{raw.id} ({raw.name}) is not a phenotypic abnormality: mode of inheritance, "
                                   "onset, clinical modifiers and frequencies describe a syndrome or qualify a "
                                   "finding, not a feature the patient has", code="not_a_phenotype")
    return raw


def case_terms(session: Session, *, case_id: str, excluded: bool | None = None) -> list[CasePhenotype]:
    """The case's terms in the order entered; ``excluded`` True/False: only absent / only present ones."""
    query = select(CasePhenotype).where(CasePhenotype.case_id == case_id)
    if excluded is not None:
        query = query.where(CasePhenotype.excluded.is_(excluded))
    return list(session.scalars(query.order_by(CasePhenotype.added_at, CasePhenotype.id)))


def terms_for_cases(session: Session, *, case_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """``{case id: [{id, name}]}`` of the terms present in the patient (not the excluded ones), for a page of
    cases in one query."""
    found: dict[str, list[dict[str, str]]] = defaultdict(list)
    if case_ids:
        rows = session.execute(select(CasePhenotype.case_id, CasePhenotype.hpo_id, CasePhenotype.name)
                               .where(CasePhenotype.case_id.in_(case_ids), CasePhenotype.excluded.is_(False))
                               .order_by(CasePhenotype.added_at, CasePhenotype.id))
        for case_id, hpo_id, name in rows:
            found[case_id].append({"id": hpo_id, "name": name})
    return dict(found)


def add_term(session: Session, *, case: Case, term_id: str, user_id: int | None,
             excluded: bool = False) -> tuple[CasePhenotype, str | None]:
    """Add a term, present or ``excluded`` (absent in the patient). Idempotent: adding a term the case has
    returns its row, switched to the ``excluded`` given (a clinician who re-examined changes it so).

    With the row, what changed — ``"added"``, ``"now absent"``, ``"now present"`` — or None when nothing did (the
    case's history records changes only)."""
    # A term the case already holds may be switched even if a later check would refuse it now (one stored before
    # terms outside "Phenotypic abnormality" were refused); a new term passes every check.
    stored_id = _primary_id(term_id)
    existing = None if stored_id is None else session.scalar(
        select(CasePhenotype).where(CasePhenotype.case_id == case.id, CasePhenotype.hpo_id == stored_id))
    if existing is not None:
        if existing.excluded == excluded:
            return existing, None
        existing.excluded = excluded
        session.flush()
        return existing, "now absent" if excluded else "now present"
    term = check_term(term_id)
    row = CasePhenotype(case_id=case.id, hpo_id=term.id, name=term.name[:300], added_by=user_id, excluded=excluded)
    session.add(row)
    session.flush()
    return row, "added"


def remove_term(session: Session, *, case: Case, term_id: str) -> CasePhenotype | None:
    """The removed row (its fields stay readable until the commit), or None if the case had no such term."""
    row = session.scalar(select(CasePhenotype).where(CasePhenotype.case_id == case.id,
                                                     CasePhenotype.hpo_id == term_id.strip().upper()[:10]))
    if row is None:
        return None
    session.delete(row)
    session.flush()
    return row


def suggested_regions(session: Session, *, case_id: str) -> list[str]:
    """Region ids (the shared facial-region vocabulary) that the case's recorded terms concern."""
    from app.synth.regions import REGIONS

    terms = [row.hpo_id for row in case_terms(session, case_id=case_id, excluded=False)]
    if not terms:
        return []
    return region_ids_for_terms(terms, [(r.id, [t.id for t in r.hpo]) for r in REGIONS])
