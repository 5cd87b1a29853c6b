"""Matching routes: share for matching (JSON + the case page's panel), similar patients, matches, the
threshold's measured meaning and the admin's gallery page. Routes stay thin; the rules are in service.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases import service as case_service
from app.cases.models import Case
from app.diagnoses.service import current_diagnosis
from app.errors import Conflict, DomainError
from app.matching import service, threshold
from app.nets.registry import LoadedModel
from app.predictions.provider import ModelUnavailable
from app.predictions.service import out_of_range
from app.predictions.serving import provider, require_model
from app.web.deps import AdminUser, CurrentUser, DbSession, client_ip
from app.web.jobs import submit_or_fail
from app.web.templating import render

api = APIRouter(prefix="/api/v1", tags=["matching"])
pages = APIRouter(include_in_schema=False)
_NO_STORE = {"Cache-Control": "no-store"}


_THRESHOLDS: dict[tuple[str, str | None], threshold.ThresholdReport | None] = {}


def _threshold(model: LoadedModel) -> threshold.ThresholdReport | None:
    """Measured once per model version and gallery file (neither changes while a model is served)."""
    key = (model.version, model.card.gallery)
    if key not in _THRESHOLDS:
        _THRESHOLDS[key] = threshold.measure(model)
    return _THRESHOLDS[key]


def _similar_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "compare_url" or v} for row in rows]


def _panel(request: Request, db: Session, *, user: User, case: Case, error: str | None = None,
           status_code: int = 200) -> Response:
    try:
        model = provider(request).get()
    except ModelUnavailable:
        model = None
    rows = service.similar_cases(db, user=user, case=case, model=model) if model else []
    ctx = {"case": case, "similar": rows, "shared": service.is_shared(db, case_id=case.id),
           "confirmed": current_diagnosis(db, case_id=case.id) is not None, "matching_error": error,
           "has_embedding": bool(model and service.embeddings_for(db, model=model, case_ids=[case.id])),
           "ood": out_of_range(db, case_id=case.id)}
    response = render(request, "matching/_similar.html", ctx, status_code)
    response.headers.update(_NO_STORE)
    return response


@api.get("/cases/{case_id}/sharing", summary="Is the case shared for matching?")
def get_sharing(case_id: str, user: CurrentUser, db: DbSession) -> dict[str, bool]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return {"shared": service.is_shared(db, case_id=case.id)}


@api.put("/cases/{case_id}/sharing", summary="Share the confirmed case for matching (audited)")
def put_sharing(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> dict[str, bool]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    service.share(db, case=case, user=user, ip=client_ip(request))
    db.commit()
    return {"shared": True}


@api.delete("/cases/{case_id}/sharing", summary="Stop sharing the case for matching (audited)")
def delete_sharing(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> dict[str, bool]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    service.unshare(db, case=case, user=user, ip=client_ip(request))
    db.commit()
    return {"shared": False}


@api.get("/cases/{case_id}/similar", summary="The nearest cases the user may see, and anonymous shared ones")
def get_similar(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                limit: int = Query(10, ge=1, le=100)) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    model = require_model(request)
    rows = service.similar_cases(db, user=user, case=case, model=model, limit=limit)
    return JSONResponse({"model": model.version, "items": _similar_json(rows)}, headers=_NO_STORE)


def _matches(request: Request, db: Session, user: User) -> dict[str, Any]:
    model = require_model(request)
    report = _threshold(model)
    if report is None:
        return {"model": model.version, "threshold": None, "items": []}
    pairs = service.unsolved_matches(db, user=user, model=model, threshold=report.threshold)
    return {"model": model.version, "threshold": report.to_json(), "items": pairs}


@api.get("/matches", summary="Pairs of unsolved cases closer than the model's match threshold")
def get_matches(request: Request, user: CurrentUser, db: DbSession) -> Response:
    data = _matches(request, db, user)
    items = [{"distance": p["distance"], "case_a": p["a"].id, "case_b": p["b"].id,
              "case_a_out_of_range": p["a_out_of_range"], "case_b_out_of_range": p["b_out_of_range"]}
             for p in data["items"]]
    return JSONResponse({**data, "items": items}, headers=_NO_STORE)


@api.get("/matching/threshold", summary="The match threshold and its measured false-match rate")
def get_threshold(request: Request, user: CurrentUser) -> dict[str, Any]:
    report = _threshold(require_model(request))
    if report is None:
        raise Conflict("no_gallery", "The served model has no gallery of two or more syndromes to measure on.")
    return report.to_json()


@pages.get("/matching/threshold.png")
async def threshold_plot(request: Request, user: CurrentUser) -> Response:
    report = _threshold(await run_in_threadpool(require_model, request))  # a first load must not hold the loop
    if report is None:
        raise Conflict("no_gallery", "The served model has no gallery of two or more syndromes to measure on.")
    png = await run_in_threadpool(threshold.plot_png, report)
    return Response(png, media_type="image/png", headers=_NO_STORE)


@pages.get("/cases/{case_id}/similar")
def similar_panel(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return _panel(request, db, user=user, case=case)


@pages.post("/cases/{case_id}/sharing")
def sharing_form(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    try:
        if service.is_shared(db, case_id=case.id):
            service.unshare(db, case=case, user=user, ip=client_ip(request))
        else:
            service.share(db, case=case, user=user, ip=client_ip(request))
        db.commit()
    except DomainError as exc:
        db.rollback()
        return _panel(request, db, user=user, case=case, error=exc.detail, status_code=exc.status_code)
    return _panel(request, db, user=user, case=case)


@pages.get("/matches")
def matches_page(request: Request, user: CurrentUser, db: DbSession) -> Response:
    try:
        data = _matches(request, db, user)
        problem = None
    except DomainError as exc:
        data, problem = {"items": [], "threshold": None}, exc.detail
    response = render(request, "matching/matches.html", {**data, "problem": problem})
    response.headers.update(_NO_STORE)
    return response


@api.post("/matching/encode", status_code=202, summary="Encode the cases the served model version has not (admin)")
async def start_encode(request: Request, admin: AdminUser, db: DbSession) -> dict[str, Any]:
    from app.jobs import service as job_service
    from app.jobs.models import QUEUED, RUNNING, Job
    from app.matching.worker import KIND

    await run_in_threadpool(require_model, request)  # a first load (or one in progress) must not hold the loop

    def _create() -> tuple[Job, bool]:
        running = db.scalar(select(Job).where(Job.kind == KIND, Job.state.in_((QUEUED, RUNNING))).limit(1))
        if running is not None and not job_service.is_lost(db, running):
            return running, False  # a dead one is never handed out again
        job = job_service.create_job(db, kind=KIND, payload={}, owner=admin)
        db.commit()
        return job, True

    job, created = await run_in_threadpool(_create)
    if created:  # a live job is already with the runner: submitting it again could only fail it
        await run_in_threadpool(submit_or_fail, request, job.id, job.lane)  # off the loop: it may write a failure
    return {"job_id": job.id}


@pages.get("/admin/gallery")
def gallery_page(request: Request, admin: AdminUser, db: DbSession) -> Response:
    from app.nets.gallery_build import gallery_summary, provenance_of

    model = require_model(request)
    report = _threshold(model)
    ctx = {"model": model, "syndromes": gallery_summary(model), "provenance": provenance_of(model),
           "threshold": report.to_json() if report else None,
           "missing": len(service.missing_embeddings(db, model=model))}
    return render(request, "matching/gallery.html", ctx)
