"""Rating pages: the study list, creation form, study page (close, retry), the blinded rating pages and the
results page, and the ad-hoc rating form of the case page. The JSON contract lives in :mod:`app.ratings.routes`;
these pages share its helpers (study creation, retry, the served model) so a page and its API answer alike."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.auth.models import User
from app.errors import DomainError
from app.explanations import service as explanation_service
from app.explanations.models import Explanation
from app.phenotypes.service import suggested_regions, terms_for_cases
from app.predictions.service import out_of_range
from app.ratings import service, views
from app.ratings.models import TOP1
from app.ratings.routes import Label, Position, _create_study, _retry, _served
from app.web.deps import AdminUser, CurrentUser, DbSession, client_ip
from app.web.errors import NotFound
from app.web.templating import render

pages = APIRouter(include_in_schema=False)


# --- studies: pages ---------------------------------------------------------------------------------------


@pages.get("/studies")
def studies_page(request: Request, user: CurrentUser, db: DbSession) -> Response:
    rows = [views.study_row(db, study, user) for study in service.studies_for(db, user=user)]
    return render(request, "studies/list.html", {"studies": rows, "admin": user.is_admin})


@pages.get("/studies/waiting")
def waiting_studies(request: Request, user: CurrentUser, db: DbSession) -> Response:
    """The open studies waiting for this user's ratings, for the home page (an htmx fragment; empty if none):
    a clinician asked to rate should not have to find the Studies page first."""
    rows = [views.study_row(db, study, user) for study in service.studies_for(db, user=user)]
    waiting = [row for row in rows if row["member"] and not row["closed"] and row["progress"] is not None
               and not row["progress"].complete]
    return render(request, "studies/_waiting.html", {"waiting": waiting})


@pages.get("/studies/new")
def new_study_page(request: Request, admin: AdminUser, db: DbSession) -> Response:
    return render(request, "studies/new.html", views.new_study_context(db, admin))


@pages.post("/studies")
def new_study_submit(
    request: Request,
    admin: AdminUser,
    db: DbSession,
    name: Annotated[str, Form(max_length=500)] = "",
    cases: Annotated[list[str] | None, Form()] = None,
    methods: Annotated[list[str] | None, Form()] = None,
    target_rule: Annotated[str, Form(max_length=16)] = TOP1,
    raters: Annotated[list[str] | None, Form()] = None,
    blinded: Annotated[str | None, Form(max_length=8)] = None,
) -> Response:
    body = service.StudyRequest(name=name, case_ids=cases or [], methods=methods or [], target_rule=target_rule,
                                raters=raters or [], blinded=blinded is not None)
    try:
        study = _create_study(request, db, admin, body)
    except DomainError as exc:
        if exc.status_code not in (422, 503):
            raise
        form = {"name": name, "cases": set(body.case_ids), "methods": set(body.methods),
                "target_rule": target_rule, "raters": set(body.raters), "blinded": body.blinded}
        return render(request, "studies/new.html", views.new_study_context(db, admin, error=exc.detail, form=form),
                      exc.status_code)
    target = f"/studies/{study.id}"
    if "hx-request" in request.headers:
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@pages.get("/studies/{study_id}")
def study_page(study_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=user)
    return render(request, "studies/detail.html", views.study_context(db, study, user, served=_served(request)))


@pages.post("/studies/{study_id}/close")
def close_study(study_id: str, request: Request, admin: AdminUser, db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=admin)
    service.close_study(db, study=study, user=admin, ip=client_ip(request))
    db.commit()
    return Response(status_code=204, headers={"HX-Redirect": f"/studies/{study.id}/results"})


@pages.post("/studies/{study_id}/retry")
def retry_maps(study_id: str, request: Request, admin: AdminUser, db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=admin)
    try:
        _retry(request, db, admin, study)
    except service.RatingError as exc:  # nothing could be asked again: say why, on the study page
        ctx = views.study_context(db, study, admin, served=_served(request), retry_error=exc.detail)
        return render(request, "studies/detail.html", ctx, exc.status_code)
    return Response(status_code=204, headers={"HX-Redirect": f"/studies/{study.id}"})


@pages.get("/studies/{study_id}/rate")
def resume(study_id: str, user: CurrentUser, db: DbSession) -> Response:
    """Resume: the first case with a map this rater has not rated yet (the overview when all are rated)."""
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_rater(db, study=study, user=user)
    cases = service.study_cases(db, study_id=study.id)
    position = service.progress(db, study=study, rater_id=user.id).first_open_position(cases)
    target = f"/studies/{study.id}/cases/{position}" if position else f"/studies/{study.id}"
    return RedirectResponse(target, status_code=303)


@pages.get("/studies/{study_id}/cases/{position}")
def rate_case_page(study_id: str, position: Position, request: Request, user: CurrentUser, db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_rater(db, study=study, user=user)
    ctx = views.case_context(db, study, user, position)
    case_id = service.study_case_at(db, study_id=study.id, position=position).case_id
    # the case's recorded HPO terms, and the facial regions they concern (marked in the region choices)
    ctx["phenotype"] = terms_for_cases(db, case_ids=[case_id]).get(case_id, [])
    ctx["suggested_regions"] = suggested_regions(db, case_id=case_id)
    ctx["ood"] = out_of_range(db, case_id=case_id)  # a rater scores maps of a flagged face knowing it is flagged
    db.commit()
    return render(request, "studies/rate.html", ctx)


@pages.get("/studies/{study_id}/cases/{position}/maps/{label}")
def rate_map_partial(study_id: str, position: Position, label: Label, request: Request, user: CurrentUser,
                     db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_rater(db, study=study, user=user)
    ctx = views.map_item_context(db, study, user, position, label)
    db.commit()
    return render(request, "studies/_map.html", ctx)


@pages.get("/studies/{study_id}/results")
def results_page(study_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_results(db, study=study, user=user)
    return render(request, "studies/results.html", views.results_context(db, study, user))


# --- ad-hoc ratings on the case page ----------------------------------------------------------------------


def _adhoc_row(db: Session, user: User, explanation_id: str) -> Explanation:
    row = explanation_service.get_explanation_for(db, explanation_id=explanation_id, user=user)
    if row is None:
        raise NotFound("explanation")
    return row


@pages.get("/explanations/{explanation_id}/rating")
def adhoc_form(explanation_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    row = _adhoc_row(db, user, explanation_id)
    return render(request, "ratings/_adhoc_form.html", views.adhoc_context(db, row, user))


@pages.post("/explanations/{explanation_id}/rating")
def adhoc_submit(
    explanation_id: str,
    request: Request,
    user: CurrentUser,
    db: DbSession,
    score: Annotated[int | None, Form(ge=1, le=5)] = None,
    regions: Annotated[list[str] | None, Form()] = None,
    context: Annotated[str, Form(pattern="^(yes|no)$")] = "no",
    comment: Annotated[str | None, Form(max_length=service.MAX_COMMENT)] = None,
) -> Response:
    row = _adhoc_row(db, user, explanation_id)
    if score is None:
        ctx = views.adhoc_context(db, row, user, error="Choose a score from 1 to 5.")
        return render(request, "ratings/_adhoc_form.html", ctx, 422)
    try:
        service.add_rating(db, explanation=row, rater=user, score=score, regions=regions or [],
                           context=context == "yes", comment=comment, study=None)
    except DomainError as exc:
        db.rollback()
        return render(request, "ratings/_adhoc_form.html", views.adhoc_context(db, row, user, error=exc.detail),
                      exc.status_code)
    db.commit()
    return render(request, "ratings/_adhoc_form.html", views.adhoc_context(db, row, user, saved=True))
