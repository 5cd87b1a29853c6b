"""Rating endpoints: the contract's ``POST /api/v1/explanations/{id}/ratings``, summary and CSV; studies
(API); a rater's view of a study case and its images. The pages (study list, forms, rating pages, results,
the ad-hoc rating form) are in :mod:`app.ratings.pages`, which shares the helpers defined here."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.errors import DomainError
from app.explanations import service as explanation_service
from app.explanations import views as explanation_views
from app.jobs import service as job_service
from app.predictions.serving import require_model, served_model
from app.ratings import service, views
from app.ratings.models import TOP1, RatingStudy
from app.web.deps import AdminUser, CurrentUser, DbSession, client_ip
from app.web.errors import ApiError, NotFound

api = APIRouter(tags=["ratings"])

NO_STORE = {"Cache-Control": "private, no-store"}
MAX_POSITION = 100_000  # far above service.MAX_CASES; bounds the path before it reaches the database

# A study's maps are addressed, on every page and in every answer a rater gets, by the case's position in the
# study and the label this rater sees: never by explanation id (global, and named with its method elsewhere).
Position = Annotated[int, Path(ge=1, le=MAX_POSITION, description="the case's position in the study (1-based)")]
Label = Annotated[str, Path(min_length=1, max_length=2, pattern="^[A-Z]{1,2}$",
                            description="the map's label as this rater sees it (A, B, C…)")]


class StudyRatingBody(BaseModel):
    """A rating in a study, of the map addressed by the URL (case position and label)."""

    model_config = ConfigDict(extra="forbid")

    score: StrictInt = Field(ge=1, le=5, description="clinical plausibility, 1 (not at all) to 5 (fully)")
    regions: list[StrictStr] = Field(default_factory=list, max_length=40,
                                     description="region ids of the vocabulary the map highlights")
    context: StrictBool = Field(default=False, description="the map relies on non-facial context")
    comment: str | None = Field(default=None, max_length=service.MAX_COMMENT)


class RatingBody(StudyRatingBody):
    """A rating of a map addressed by its explanation id: ad hoc, or in an unblinded study."""

    study_id: str | None = Field(default=None, max_length=32, description="null: an ad-hoc rating; a study "
                                 "given here must be unblinded (blinded studies are rated by map label)")


class StudyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=service.MAX_NAME)
    cases: list[StrictStr] = Field(max_length=service.MAX_CASES, description="case ids")
    methods: list[StrictStr] = Field(max_length=20, description="method ids")
    target_rule: str = Field(default=TOP1, description="'top1' or 'confirmed'")
    raters: list[StrictStr] = Field(max_length=200, description="usernames")
    blinded: StrictBool = True


def _study_from_query(db: Session, user: User, study_id: str | None) -> RatingStudy | None:
    if study_id is None:
        return None
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_results(db, study=study, user=user)
    return study


QUEUE_DOWN = "The job queue (broker) is unreachable; nothing was started. Try again later."


def _submit(request: Request, jobs: list[Any]) -> bool:
    """Publish committed jobs. If the broker is unreachable, fail every job not yet published (their maps fail
    with them, so they can always be asked again) and return False; a job left queued but never published
    would otherwise wait forever, never counting as lost while other jobs move."""
    for index, job in enumerate(jobs):
        try:
            request.app.state.jobs.submit(job.id, job.lane)
        except Exception as exc:  # kombu/redis raise many types; any of them means the job will never run
            for unpublished in jobs[index:]:
                job_service.finish(request.app.state.sessions, unpublished.id,
                                   error=f"the job queue is unreachable: {exc}")
            return False
    return True


def _served(request: Request) -> service.ModelKey | None:
    """The served model's (id, version), or None when none can be loaded (nothing is then "unavailable")."""
    model = served_model(request)
    return (model.card.id, model.card.version) if model else None


# --- the contract: ratings, summary, CSV ------------------------------------------------------------------


def _rating_answer(db: Session, user: User, study: RatingStudy | None, rating: Any, case_id: str) -> dict[str, Any]:
    out = service.rating_out(rating, reveal_method=not rating.blinded)
    if study is not None:
        prog = service.progress(db, study=study, rater_id=user.id)
        out["progress"] = {**prog.to_dict(), "case_rated": prog.per_case.get(case_id, 0),
                           "case_total": prog.case_total(case_id)}
    return out


def _save_rating(db: Session, user: User, explanation_id: str, body: RatingBody) -> dict[str, Any]:
    study = None
    if body.study_id is not None:
        study = service.get_study(db, study_id=body.study_id, user=user)
        service.require_rater(db, study=study, user=user)
        if study.blinded:
            raise service.RatingError(
                "blinded_study", "Maps of a blinded study are rated by case position and label: "
                f"POST /api/v1/studies/{study.id}/cases/{{position}}/maps/{{label}}/ratings.")
        _, row = service.study_map(db, study_id=study.id, explanation_id=explanation_id)
    else:
        row = explanation_service.get_explanation_for(db, explanation_id=explanation_id, user=user)
        if row is None:
            raise NotFound("explanation")
    rating = service.add_rating(db, explanation=row, rater=user, score=body.score, regions=body.regions,
                                context=body.context, comment=body.comment, study=study)
    db.commit()
    return _rating_answer(db, user, study, rating, row.case_id)


@api.post("/api/v1/explanations/{explanation_id}/ratings", status_code=201, summary="Rate a map (append-only)")
def rate_map(explanation_id: str, body: RatingBody, user: CurrentUser, db: DbSession) -> JSONResponse:
    return JSONResponse(_save_rating(db, user, explanation_id, body), status_code=201, headers=NO_STORE)


@api.post("/api/v1/studies/{study_id}/cases/{position}/maps/{label}/ratings", status_code=201,
          summary="Rate a study map by case position and label (append-only; blinded or not)")
def rate_study_map(study_id: str, position: Position, label: Label, body: StudyRatingBody, user: CurrentUser,
                   db: DbSession) -> JSONResponse:
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_rater(db, study=study, user=user)
    study_case, _, row = service.labelled_map(db, study=study, rater_id=user.id, position=position, label=label)
    rating = service.add_rating(db, explanation=row, rater=user, score=body.score, regions=body.regions,
                                context=body.context, comment=body.comment, study=study)
    db.commit()
    return JSONResponse(_rating_answer(db, user, study, rating, study_case.case_id), status_code=201,
                        headers=NO_STORE)


@api.get("/api/v1/ratings/summary", summary="Per-method rating statistics of a study (or of ad-hoc ratings)")
def ratings_summary(
    user: CurrentUser,
    db: DbSession,
    study_id: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    study = _study_from_query(db, user, study_id)
    # Ad-hoc ratings: admins see everyone's, clinicians their own.
    return service.summary(db, study=study, rater_id=None if (study or user.is_admin) else user.id)


@api.get("/api/v1/ratings.csv", summary="Ratings in long format (latest per rater and map; history=1: all rows)",
         response_class=Response)
def ratings_csv(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    study_id: Annotated[str | None, Query(max_length=32)] = None,
    history: Annotated[bool, Query(description="every row of the append-only history")] = False,
) -> Response:
    study = _study_from_query(db, user, study_id)
    rater_id = None if (study or user.is_admin) else user.id
    scope = study.id if study else None
    rows = (service.all_ratings(db, study_id=scope, rater_id=rater_id) if history
            else service.latest_ratings(db, study_id=scope, rater_id=rater_id))
    audit.record(db, action="export", user=user, ip=client_ip(request),
                 detail={"what": "ratings_csv", "study": scope, "history": history, "rows": len(rows)})
    db.commit()
    name = f"gestaltlens-ratings-{study.id[:8] if study else 'adhoc'}{'-history' if history else ''}.csv"
    return Response(service.csv_text(rows), media_type="text/csv; charset=utf-8",
                    headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'})


# --- studies: API -----------------------------------------------------------------------------------------


def _create_study(request: Request, db: Session, admin: User, body: service.StudyRequest) -> RatingStudy:
    model = require_model(request)
    for attempt in range(2):  # a concurrent identical map request may insert the same cache key first
        try:
            study, jobs = service.create_study(db, admin=admin, body=body, model=model,
                                               store=request.app.state.photo_store, ip=client_ip(request))
            db.commit()
            break
        except IntegrityError:
            db.rollback()
            if attempt:
                raise
        except DomainError:
            db.rollback()
            raise
    if not _submit(request, jobs):
        # Nothing half-made: the study goes again (its failed maps stay as ordinary, retryable map rows).
        service.delete_study(db, study=study, user=admin, ip=client_ip(request))
        db.commit()
        raise ApiError(503, "queue_unavailable", QUEUE_DOWN)
    return study


def study_out(db: Session, study: RatingStudy, user: User, served: service.ModelKey | None = None) -> dict[str, Any]:
    cases = service.study_cases(db, study_id=study.id)
    states = service.map_states(db, study_id=study.id, served=served)
    out: dict[str, Any] = {
        "id": study.id, "name": study.name, "target_rule": study.target_rule, "blinded": study.blinded,
        "closed": study.is_closed, "created_at": study.created_at.isoformat(), "cases": len(cases),
        "maps": states.to_dict(),
    }
    if service.is_member(db, study_id=study.id, user_id=user.id):
        out["progress"] = service.progress(db, study=study, rater_id=user.id, states=states).to_dict()
    if user.is_admin:
        out["methods"] = service.study_methods(db, study_id=study.id)
        out["case_ids"] = [c.case_id for c in cases]
        out["raters"] = [{"username": r.user.username, **service.progress(db, study=study, rater_id=r.user_id,
                                                                           states=states).to_dict()}
                         for r in service.study_raters(db, study_id=study.id)]
        out["jobs"] = sorted(states.pending_jobs)
        out["problems"] = service.problem_maps(db, study=study, states=states, served=served)
        out["warnings"] = service.blinding_warnings(db, study=study)
    return out


@api.post("/api/v1/studies", status_code=201, summary="Create a rating study (admins)")
def create_study(body: StudyBody, request: Request, admin: AdminUser, db: DbSession) -> JSONResponse:
    request_ = service.StudyRequest(name=body.name, case_ids=body.cases, methods=body.methods,
                                    target_rule=body.target_rule, raters=body.raters, blinded=body.blinded)
    study = _create_study(request, db, admin, request_)
    return JSONResponse(study_out(db, study, admin, _served(request)), status_code=201)


@api.get("/api/v1/studies", summary="Studies you rate in (admins: all)")
def list_studies(request: Request, user: CurrentUser, db: DbSession) -> list[dict[str, Any]]:
    served = _served(request)
    return [study_out(db, study, user, served) for study in service.studies_for(db, user=user)]


@api.get("/api/v1/studies/{study_id}", summary="One study")
def get_study(study_id: str, request: Request, user: CurrentUser, db: DbSession) -> dict[str, Any]:
    return study_out(db, service.get_study(db, study_id=study_id, user=user), user, _served(request))


@api.delete("/api/v1/studies/{study_id}", status_code=204, summary="Delete a study and its ratings (admins)")
def delete_study(study_id: str, request: Request, admin: AdminUser, db: DbSession) -> Response:
    study = service.get_study(db, study_id=study_id, user=admin)
    service.delete_study(db, study=study, user=admin, ip=client_ip(request))
    db.commit()
    headers = {"HX-Redirect": "/studies"} if "hx-request" in request.headers else {}
    return Response(status_code=204, headers=headers)


@api.post("/api/v1/studies/{study_id}/retry", summary="Ask again for a study's failed maps (admins)")
def retry_maps_api(study_id: str, request: Request, admin: AdminUser, db: DbSession) -> JSONResponse:
    study = service.get_study(db, study_id=study_id, user=admin)
    result = _retry(request, db, admin, study)
    return JSONResponse({"jobs": [job.id for job in result.jobs], "asked": result.asked,
                         "unavailable": len(result.unavailable)}, status_code=202)


@api.get("/api/v1/studies/{study_id}/cases/{position}", summary="A rater's view of one case (maps by label)")
def study_case(study_id: str, position: Position, user: CurrentUser, db: DbSession) -> dict[str, Any]:
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_rater(db, study=study, user=user)
    ctx = views.case_context(db, study, user, position)
    db.commit()  # an order drawn on first view is stored
    maps = []
    for item in ctx["items"]:
        entry = {"label": item["label"], "status": item["state"], "heat_png": item["heat_url"],
                 "rate_url": item["rate_url"], "rated": item["rating"] is not None}
        if not study.blinded:
            entry["method"] = item["method_label"]
            entry["explanation_id"] = item["explanation_id"]
        maps.append(entry)
    return {"position": position, "index": ctx["ordinal"], "cases": ctx["n_cases"],
            "previous": ctx["prev_position"], "next": ctx["next_position"], "target": ctx["target_name"],
            "maps": maps, "progress": ctx["progress"].to_dict()}


def _study_case_row(db: Session, user: User, study_id: str, position: int) -> Case:
    study = service.get_study(db, study_id=study_id, user=user)
    row = service.study_case_at(db, study_id=study.id, position=position)
    case = db.get(Case, row.case_id)
    if case is None:
        raise NotFound("case")
    return case


@api.get("/api/v1/studies/{study_id}/cases/{position}/aligned.png", response_class=Response,
         summary="The aligned crop of a study case")
def study_case_aligned(study_id: str, position: Position, request: Request, user: CurrentUser,
                       db: DbSession) -> Response:
    case = _study_case_row(db, user, study_id, position)
    return Response(request.app.state.photo_store.read(case.aligned_path), media_type="image/png", headers=NO_STORE)


@api.get("/api/v1/studies/{study_id}/cases/{position}/photo", response_class=Response,
         summary="The de-identified photo of a study case")
def study_case_photo(study_id: str, position: Position, request: Request, user: CurrentUser,
                     db: DbSession) -> Response:
    case = _study_case_row(db, user, study_id, position)
    return Response(request.app.state.photo_store.read(case.photo_path), media_type=case.photo_media_type,
                    headers=NO_STORE)


@api.get("/api/v1/studies/{study_id}/cases/{position}/maps/{label}/heat.png", response_class=Response,
         summary="A study map's heat layer on the crop, by case position and the label this rater sees")
def study_map_png(study_id: str, position: Position, label: Label, request: Request, user: CurrentUser,
                  db: DbSession, space: Annotated[Literal["crop", "photo"], Query()] = "crop") -> Response:
    study = service.get_study(db, study_id=study_id, user=user)
    service.require_rater(db, study=study, user=user)
    _, _, row = service.labelled_map(db, study=study, rater_id=user.id, position=position, label=label)
    db.commit()  # an order drawn on first use is stored
    if row.state != "done" or not row.map_path:
        raise ApiError(409, "not_ready", "This map is not computed yet.")
    case = db.get(Case, row.case_id)
    # space=photo: the layer at photo resolution for the enlarged view (a 112-px crop scaled up is pixelated)
    png = explanation_views.map_png(request.app.state.photo_store, case, row, view="heat", space=space, opacity=1.0)
    # The URL names a label, which means another map for another rater: never kept by a shared browser cache.
    return Response(_uncompressed(png), media_type="image/png", headers=NO_STORE)


def _uncompressed(png: bytes) -> bytes:
    """The same image as a stored (uncompressed) PNG: its size then depends on its dimensions alone. Compressed,
    a signed map's diverging colours and a magnitude map's sequential ones gave sizes that told a blinded rater
    the method family; 112×112 RGBA stored is about 50 KB."""
    image = Image.open(io.BytesIO(png))
    image.load()
    out = io.BytesIO()
    image.convert("RGBA").save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _retry(request: Request, db: Session, admin: User, study: RatingStudy) -> service.Retry:
    try:
        result = service.retry_maps(db, study=study, user=admin, model=require_model(request))
    except DomainError:
        db.rollback()
        raise
    audit.record(db, action="study_retry", user=admin, ip=client_ip(request),
                 detail={"study": study.id, "asked": result.asked, "jobs": [job.id for job in result.jobs],
                         "unavailable": len(result.unavailable)})
    db.commit()
    if not _submit(request, result.jobs):
        raise ApiError(503, "queue_unavailable", QUEUE_DOWN + " The maps stay failed and can be asked for again.")
    return result
