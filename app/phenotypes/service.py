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
from app.phenotypes.ontology import ontology, region_ids_for_terms

__all__ = ["UnknownTerm", "add_term", "case_terms", "remove_term", "suggested_regions", "terms_for_cases"]


class UnknownTerm(DomainError):
    """422 ``unknown_hpo_term``: not a current HPO term."""

    def __init__(self, term_id: str) -> None:
        super().__init__("unknown_hpo_term", f"{term_id[:40]!r} is not a current term of the Human Phenotype Ontology")


def case_terms(session: Session, *, case_id: str) -> list[CasePhenotype]:
    return list(session.scalars(select(CasePhenotype).where(CasePhenotype.case_id == case_id)
                                .order_by(CasePhenotype.added_at, CasePhenotype.id)))


def terms_for_cases(session: Session, *, case_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """``{case id: [{id, name}]}`` for a page of cases in one query."""
    found: dict[str, list[dict[str, str]]] = defaultdict(list)
    if case_ids:
        rows = session.execute(select(CasePhenotype.case_id, CasePhenotype.hpo_id, CasePhenotype.name)
                               .where(CasePhenotype.case_id.in_(case_ids))
                               .order_by(CasePhenotype.added_at, CasePhenotype.id))
        for case_id, hpo_id, name in rows:
            found[case_id].append({"id": hpo_id, "name": name})
    return dict(found)


def add_term(session: Session, *, case: Case, term_id: str, user_id: int | None) -> CasePhenotype:
    """Add a term (idempotent: adding a term the case has returns the existing row)."""
    term = ontology().get(term_id)
    if term is None or term.obsolete:
        raise UnknownTerm(term_id)
    existing = session.scalar(select(CasePhenotype).where(CasePhenotype.case_id == case.id,
                                                          CasePhenotype.hpo_id == term.id))
    if existing is not None:
        return existing
    row = CasePhenotype(case_id=case.id, hpo_id=term.id, name=term.name[:300], added_by=user_id)
    session.add(row)
    session.flush()
    return row


def remove_term(session: Session, *, case: Case, term_id: str) -> bool:
    row = session.scalar(select(CasePhenotype).where(CasePhenotype.case_id == case.id,
                                                     CasePhenotype.hpo_id == term_id.strip().upper()[:10]))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def suggested_regions(session: Session, *, case_id: str) -> list[str]:
    """Region ids (the shared facial-region vocabulary) that the case's recorded terms concern."""
    from app.synth.regions import REGIONS

    terms = [row.hpo_id for row in case_terms(session, case_id=case_id)]
    if not terms:
        return []
    return region_ids_for_terms(terms, [(r.id, [t.id for t in r.hpo]) for r in REGIONS])
